//! Shared data and shared queues: process-wide, keyed by `vm_id`, as in
//! Envoy, so every worker's VM of a plugin (and other plugins on the same
//! vm_id) see the same values.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;

use super::abi::Status;
use super::engine::lock;
use super::plugin::Plugin;

/// (vm_id, key) → (value, CAS token): every write bumps the token.
type Values = HashMap<(String, String), (Bytes, u32)>;

fn data() -> &'static Mutex<Values> {
    static DATA: OnceLock<Mutex<Values>> = OnceLock::new();
    DATA.get_or_init(Default::default)
}

pub fn get(vm_id: &str, key: &str) -> Option<(Bytes, u32)> {
    lock(data()).get(&(vm_id.to_string(), key.to_string())).cloned()
}

/// Writes `value`; with a non-zero `cas`, only if nobody wrote since the
/// read that returned it.
pub fn set(vm_id: &str, key: String, value: Bytes, cas: u32) -> Status {
    let mut map = lock(data());
    let entry = map.entry((vm_id.to_string(), key)).or_insert((Bytes::new(), 0));
    if cas != 0 && cas != entry.1 {
        return Status::CasMismatch;
    }
    // Never 0: that value means "no check".
    let next = entry.1.wrapping_add(1).max(1);
    *entry = (value, next);
    Status::Ok
}

struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Bytes>,
    /// The plugin whose root context registered the queue and is told when
    /// items arrive.
    owner: Weak<Plugin>,
}

#[derive(Default)]
struct Queues {
    by_id: HashMap<u32, Queue>,
    next: u32,
}

fn queues() -> &'static Mutex<Queues> {
    static Q: OnceLock<Mutex<Queues>> = OnceLock::new();
    Q.get_or_init(Default::default)
}

pub fn register_queue(plugin: &Arc<Plugin>, name: &str) -> u32 {
    let mut q = lock(queues());
    if let Some((id, queue)) = q.by_id.iter_mut().find(|(_, x)| x.vm_id == plugin.vm_id && x.name == name) {
        queue.owner = Arc::downgrade(plugin);
        return *id;
    }
    q.next += 1;
    let id = q.next;
    q.by_id.insert(id, Queue { vm_id: plugin.vm_id.clone(), name: name.to_string(), items: VecDeque::new(), owner: Arc::downgrade(plugin) });
    id
}

pub fn resolve_queue(vm_id: &str, name: &str) -> Option<u32> {
    lock(queues()).by_id.iter().find(|(_, q)| q.vm_id == vm_id && q.name == name).map(|(id, _)| *id)
}

/// Adds an item; the owner's root context hears of it (`proxy_on_queue_ready`)
/// once the current callback has returned.
pub fn enqueue(id: u32, item: Bytes) -> Status {
    let owner = {
        let mut q = lock(queues());
        let Some(queue) = q.by_id.get_mut(&id) else { return Status::NotFound };
        queue.items.push_back(item);
        queue.owner.upgrade()
    };
    if let Some(owner) = owner {
        super::vm::notify_queue(owner, id);
    }
    Status::Ok
}

pub fn dequeue(id: u32) -> Result<Option<Bytes>, Status> {
    let mut q = lock(queues());
    let queue = q.by_id.get_mut(&id).ok_or(Status::NotFound)?;
    Ok(queue.items.pop_front())
}

;; A plugin that watches the request body go by, for the host's tests.
;; The request header `x-body-mode` picks what it does with each chunk:
;; - absent: lets it through (StopIteration never), adding up the sizes;
;; - `buffer`: holds the body (Pause, StopIterationAndBuffer) until its
;;   end, when the callback sees all of it;
;; - `deny`: lets chunks through, and at the end answers 403 "body denied".
;; The response gets `x-body-seen: TOTAL/LAST/ENDS`: the sizes added up
;; (pass-through and deny modes), the size the end-of-stream callback saw,
;; and how many callbacks saw the end.
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "x-body-mode")
  (data (i32.const 32) "x-body-seen")
  (data (i32.const 48) "body denied")
  ;; 200, 204: out-pointers; 1024: the header value; heap from 4096.
  (global $heap (mut i32) (i32.const 4096))
  (global $mode (mut i32) (i32.const 0))
  (global $total (mut i32) (i32.const 0))
  (global $last (mut i32) (i32.const 0))
  (global $ends (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (local $first i32)
    (global.set $mode (i32.const 0))
    (global.set $total (i32.const 0))
    (global.set $last (i32.const 0))
    (global.set $ends (i32.const 0))
    (if (i32.eqz (call $get (i32.const 0) (i32.const 16) (i32.const 11) (i32.const 200) (i32.const 204)))
      (then
        (local.set $first (i32.load8_u (i32.load (i32.const 200))))
        ;; `b`uffer: 1, `d`eny: 2.
        (if (i32.eq (local.get $first) (i32.const 98)) (then (global.set $mode (i32.const 1))))
        (if (i32.eq (local.get $first) (i32.const 100)) (then (global.set $mode (i32.const 2))))))
    (i32.const 0))
  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $end i32) (result i32)
    (if (local.get $end)
      (then
        (global.set $ends (i32.add (global.get $ends) (i32.const 1)))
        (global.set $last (local.get $size))))
    (if (i32.eq (global.get $mode) (i32.const 1))
      (then (return (i32.eqz (local.get $end)))))
    (global.set $total (i32.add (global.get $total) (local.get $size)))
    (if (i32.and (i32.eq (global.get $mode) (i32.const 2)) (local.get $end))
      (then
        (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) (i32.const 48) (i32.const 11) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (i32.const 0))
  ;; Writes `v` in decimal at `p`; returns its length.
  (func $itoa (param $v i32) (param $p i32) (result i32)
    (local $len i32) (local $t i32) (local $i i32)
    (local.set $t (local.get $v))
    (local.set $len (i32.const 1))
    (block $done
      (loop $count
        (br_if $done (i32.lt_u (local.get $t) (i32.const 10)))
        (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
        (local.set $len (i32.add (local.get $len) (i32.const 1)))
        (br $count)))
    (local.set $i (local.get $len))
    (local.set $t (local.get $v))
    (loop $write
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (i32.store8 (i32.add (local.get $p) (local.get $i)) (i32.add (i32.const 48) (i32.rem_u (local.get $t) (i32.const 10))))
      (local.set $t (i32.div_u (local.get $t) (i32.const 10)))
      (br_if $write (i32.gt_u (local.get $i) (i32.const 0))))
    (local.get $len))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.add (i32.const 1024) (call $itoa (global.get $total) (i32.const 1024))))
    (i32.store8 (local.get $p) (i32.const 47))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (local.set $p (i32.add (local.get $p) (call $itoa (global.get $last) (local.get $p))))
    (i32.store8 (local.get $p) (i32.const 47))
    (local.set $p (i32.add (local.get $p) (i32.const 1)))
    (local.set $p (i32.add (local.get $p) (call $itoa (global.get $ends) (local.get $p))))
    (drop (call $add (i32.const 2) (i32.const 32) (i32.const 11) (i32.const 1024) (i32.sub (local.get $p) (i32.const 1024))))
    (i32.const 0))
)

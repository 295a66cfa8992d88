;; A proxy-wasm plugin small enough to read, for the host's own tests:
;; tags requests and responses with `x-wasm: <configuration>`, and misbehaves
;; on request: `x-crash` traps, `x-spin` loops forever, `x-grow` grows its
;; memory until it cannot, `x-deny` answers 403 itself (details "probe
;; said no"), `x-close` resets
;; the stream (proxy_close_stream). In on_log it counts the requests whose
;; headers show the router's `x-envoy-expected-rq-timeout-ms` in the
;; counter `probe_routed_total`. It keeps its
;; configuration as the stream property `probe_seen` and echoes it back as
;; `x-wasm-property` on the response; on the response trailers it adds
;; `x-wasm`, copies `grpc-status` to `x-wasm-grpc-status` and removes
;; `x-extra`; on the request trailers it adds `x-wasm`, removes `x-extra`
;; and answers a trailer `x-deny` with the 403.
(module
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $remove (param i32 i32 i32) (result i32)))
  (import "env" "proxy_close_stream" (func $close (param i32) (result i32)))
  (import "env" "proxy_define_metric" (func $define (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_increment_metric" (func $increment (param i32 i64) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "x-wasm")
  (data (i32.const 32) "x-crash")
  (data (i32.const 48) "x-spin")
  (data (i32.const 64) "x-grow")
  (data (i32.const 80) "x-deny")
  (data (i32.const 96) "denied by probe")
  (data (i32.const 128) "probe configured")
  (data (i32.const 144) "probe_seen")
  (data (i32.const 160) "x-wasm-property")
  (data (i32.const 176) "grpc-status")
  (data (i32.const 208) "x-wasm-grpc-status")
  (data (i32.const 232) "x-extra")
  (data (i32.const 240) "x-close")
  (data (i32.const 256) "x-envoy-expected-rq-timeout-ms")
  (data (i32.const 288) "probe_routed_total")
  (data (i32.const 320) "probe said no")
  (data (i32.const 352) "x-deny-grpc")
  ;; 192, 200..208: out-pointers; heap from 4096.
  (global $heap (mut i32) (i32.const 4096))
  (global $config_ptr (mut i32) (i32.const 0))
  (global $config_len (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (drop (call $buffer (i32.const 7) (i32.const 0) (local.get $size) (i32.const 200) (i32.const 204)))
    (global.set $config_ptr (i32.load (i32.const 200)))
    (global.set $config_len (i32.load (i32.const 204)))
    (drop (call $log (i32.const 2) (i32.const 128) (i32.const 16)))
    ;; An empty configuration is refused.
    (i32.ne (global.get $config_len) (i32.const 0)))
  (func $has (param $name i32) (param $len i32) (result i32)
    (i32.eqz (call $get (i32.const 0) (local.get $name) (local.get $len) (i32.const 200) (i32.const 204))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (if (call $has (i32.const 32) (i32.const 7)) (then unreachable))
    (if (call $has (i32.const 48) (i32.const 6)) (then (loop $forever (br $forever))))
    (if (call $has (i32.const 64) (i32.const 6))
      (then
        (loop $more (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    (if (call $has (i32.const 240) (i32.const 7))
      (then
        (drop (call $close (i32.const 0)))
        (return (i32.const 0))))
    ;; A gRPC status of its own: UNAUTHENTICATED where the 403 would say
    ;; PERMISSION_DENIED.
    (if (call $has (i32.const 352) (i32.const 11))
      (then
        (drop (call $reply (i32.const 403) (i32.const 320) (i32.const 13) (i32.const 96) (i32.const 15) (i32.const 0) (i32.const 0) (i32.const 16)))
        (return (i32.const 1))))
    (if (call $has (i32.const 80) (i32.const 6))
      (then
        (drop (call $reply (i32.const 403) (i32.const 320) (i32.const 13) (i32.const 96) (i32.const 15) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 6) (global.get $config_ptr) (global.get $config_len)))
    (drop (call $set_property (i32.const 144) (i32.const 10) (global.get $config_ptr) (global.get $config_len)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 16) (i32.const 6) (global.get $config_ptr) (global.get $config_len)))
    (if (i32.eqz (call $get_property (i32.const 144) (i32.const 10) (i32.const 200) (i32.const 204)))
      (then (drop (call $add (i32.const 2) (i32.const 160) (i32.const 15) (i32.load (i32.const 200)) (i32.load (i32.const 204))))))
    (i32.const 0))
  ;; Request trailers (an HTTP/2 client's): tagged like the headers,
  ;; `x-extra` removed, a trailer `x-deny` answered with the 403.
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32)
    (if (i32.eqz (call $get (i32.const 1) (i32.const 80) (i32.const 6) (i32.const 200) (i32.const 204)))
      (then
        (drop (call $reply (i32.const 403) (i32.const 320) (i32.const 13) (i32.const 96) (i32.const 15) (i32.const 0) (i32.const 0) (i32.const -1)))
        (return (i32.const 1))))
    (drop (call $add (i32.const 1) (i32.const 16) (i32.const 6) (global.get $config_ptr) (global.get $config_len)))
    (drop (call $remove (i32.const 1) (i32.const 232) (i32.const 7)))
    (i32.const 0))
  (func (export "proxy_on_response_trailers") (param i32 i32) (result i32)
    (drop (call $add (i32.const 3) (i32.const 16) (i32.const 6) (global.get $config_ptr) (global.get $config_len)))
    (if (i32.eqz (call $get (i32.const 3) (i32.const 176) (i32.const 11) (i32.const 200) (i32.const 204)))
      (then (drop (call $add (i32.const 3) (i32.const 208) (i32.const 18) (i32.load (i32.const 200)) (i32.load (i32.const 204))))))
    (drop (call $remove (i32.const 3) (i32.const 232) (i32.const 7)))
    (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (if (call $has (i32.const 256) (i32.const 30))
      (then
        (drop (call $define (i32.const 0) (i32.const 288) (i32.const 18) (i32.const 192)))
        (drop (call $increment (i32.load (i32.const 192)) (i64.const 1))))))
)

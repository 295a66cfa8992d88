;; A plugin that makes a unary gRPC call (proxy_grpc_call) for requests
;; carrying `x-grpc-msg`: the message goes to weft.Echo/Say on cluster
;; `up`, and the request goes on with what came back as request headers:
;; `x-grpc-reply: <message>`, or `x-grpc-code: <'A' + status code>` and
;; `x-grpc-message: <status message>` (proxy_get_status). (Envoy 1.40
;; does not send a local reply asked for in proxy_on_grpc_close.)
;; With `x-grpc-cancel` it cancels the call at once and goes on, telling
;; the app what proxy_grpc_cancel returned for the call and for an unknown
;; token: `x-grpc-cancel: <'0' + status><'0' + status>`.
;; With `x-grpc-async` it goes on at once: the answer comes while the
;; request is no longer paused (or gone), and is only kept. A request
;; with `x-grpc-last` gets the last message received as `x-grpc-kept`.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $cancel (param i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "x-grpc-msg")
  (data (i32.const 32) "up")
  (data (i32.const 48) "weft.Echo")
  (data (i32.const 64) "Say")
  ;; An empty header map: zero pairs.
  (data (i32.const 80) "\00\00\00\00")
  (data (i32.const 96) "call failed")
  (data (i32.const 112) "x-grpc-reply")
  (data (i32.const 128) "x-grpc-code")
  (data (i32.const 144) "x-grpc-message")
  ;; 160: the code's letter; 164: the cancel statuses.
  (data (i32.const 176) "x-grpc-cancel")
  (data (i32.const 224) "x-grpc-async")
  (data (i32.const 240) "x-grpc-last")
  (data (i32.const 256) "x-grpc-kept")
  ;; 200..220, 300: out-pointers; the last message from 2048; heap from 4096.
  (global $heap (mut i32) (i32.const 4096))
  ;; The stream waiting for the call: its answer comes to the root context
  ;; (callouts are the root's, in Envoy), which makes the stream effective.
  (global $waiting (mut i32) (i32.const 0))
  (global $async (mut i32) (i32.const 0))
  (global $last_len (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param $context i32) (param i32 i32) (result i32)
    (if (i32.eqz (call $get (i32.const 0) (i32.const 240) (i32.const 11) (i32.const 200) (i32.const 204)))
      (then
        (drop (call $add (i32.const 0) (i32.const 256) (i32.const 11) (i32.const 2048) (global.get $last_len)))
        (return (i32.const 0))))
    (global.set $waiting (local.get $context))
    (global.set $async (i32.eqz (call $get (i32.const 0) (i32.const 224) (i32.const 12) (i32.const 200) (i32.const 204))))
    (if (call $get (i32.const 0) (i32.const 16) (i32.const 10) (i32.const 200) (i32.const 204))
      (then (return (i32.const 0))))
    (if (call $grpc_call (i32.const 32) (i32.const 2) (i32.const 48) (i32.const 9) (i32.const 64) (i32.const 3)
          (i32.const 80) (i32.const 4) (i32.load (i32.const 200)) (i32.load (i32.const 204)) (i32.const 5000) (i32.const 300))
      (then (drop (call $reply (i32.const 500) (i32.const 0) (i32.const 0) (i32.const 96) (i32.const 11) (i32.const 0) (i32.const 0) (i32.const -1)))))
    (if (i32.eqz (call $get (i32.const 0) (i32.const 176) (i32.const 13) (i32.const 200) (i32.const 204)))
      (then
        (i32.store8 (i32.const 164) (i32.add (i32.const 48) (call $cancel (i32.load (i32.const 300)))))
        (i32.store8 (i32.const 165) (i32.add (i32.const 48) (call $cancel (i32.const 9999))))
        (drop (call $add (i32.const 0) (i32.const 176) (i32.const 13) (i32.const 164) (i32.const 2)))
        (return (i32.const 0))))
    (i32.eqz (global.get $async)))
  (func (export "proxy_on_grpc_receive") (param i32 i32) (param $size i32)
    (drop (call $buffer (i32.const 5) (i32.const 0) (local.get $size) (i32.const 200) (i32.const 204)))
    (memory.copy (i32.const 2048) (i32.load (i32.const 200)) (i32.load (i32.const 204)))
    (global.set $last_len (i32.load (i32.const 204)))
    (if (global.get $async) (then (return)))
    (drop (call $effective (global.get $waiting)))
    (drop (call $add (i32.const 0) (i32.const 112) (i32.const 12) (i32.load (i32.const 200)) (i32.load (i32.const 204))))
    (drop (call $continue (i32.const 0))))
  (func (export "proxy_on_grpc_close") (param i32 i32) (param $code i32)
    (i64.store (i32.const 212) (i64.const 0))
    (drop (call $effective (global.get $waiting)))
    (drop (call $get_status (i32.const 208) (i32.const 212) (i32.const 216)))
    (i32.store8 (i32.const 160) (i32.add (i32.const 65) (i32.load (i32.const 208))))
    (drop (call $add (i32.const 0) (i32.const 128) (i32.const 11) (i32.const 160) (i32.const 1)))
    (drop (call $add (i32.const 0) (i32.const 144) (i32.const 14) (i32.load (i32.const 212)) (i32.load (i32.const 216))))
    (drop (call $continue (i32.const 0))))
)

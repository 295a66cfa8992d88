;; A plugin that opens a gRPC stream (proxy_grpc_stream) to weft.Echo on
;; cluster `up` for requests carrying `x-grpc-stream: <mode>`, with the
;; initial metadata `x-md: hi`, and logs what it hears:
;;   S<token parity>;  I<x-md-echo of the initial metadata, or ->;
;;   M<message>;  T<grpc-status of the trailing metadata>;
;;   C<'A' + status code><status message>;
;; When the stream closes, the paused request goes on with the log as
;; `x-grpc-log`. Modes:
;;   a: Chat, send "one" and "two", then proxy_grpc_close;
;;   b: Chat, send "one" and "fail:7:no" (the service ends the stream);
;;   c: Refuse (a trailers-only response);
;;   d: Chat, send "one" as the last message (end_stream), no close;
;;   e: Chat, cancelled at once; the log holds the statuses ('0' + status)
;;      of cancel(token), cancel(9998), send(token), send(1), close(token),
;;      and the request goes on at once;
;;   f: a stream to the unknown cluster `nowhere`;
;;   g: as a, but the request goes on at once: the stream outlives it and
;;      its events reach the root context alone;
;;   i: as a, but the request goes on with the first message (the log
;;      so far); the rest reaches the plugin after;
;;   h: no stream; the request goes on with the log as it is (g's).
;; A stream that does not open logs its status alone, and the request
;; goes on at once.
(module
  (import "env" "proxy_get_header_map_value" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $buffer (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_status" (func $get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $open (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $close (param i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $cancel (param i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 16) "x-grpc-stream")
  (data (i32.const 32) "up")
  (data (i32.const 48) "weft.Echo")
  (data (i32.const 64) "Chat")
  (data (i32.const 72) "Refuse")
  ;; The initial metadata: one pair, x-md: hi.
  (data (i32.const 80) "\01\00\00\00\04\00\00\00\02\00\00\00x-md\00hi\00")
  (data (i32.const 112) "x-md-echo")
  (data (i32.const 128) "grpc-status")
  (data (i32.const 144) "x-grpc-log")
  (data (i32.const 160) "one")
  (data (i32.const 168) "two")
  (data (i32.const 176) "fail:7:no")
  (data (i32.const 192) "nowhere")
  ;; 200..220: out-pointers; 300: the token; the log from 1024; heap from 4096.
  (global $heap (mut i32) (i32.const 4096))
  (global $log (mut i32) (i32.const 1024))
  (global $waiting (mut i32) (i32.const 0))
  ;; Mode i: the request goes on with the first message.
  (global $early (mut i32) (i32.const 0))
  (func (export "proxy_abi_version_0_2_1"))
  (func (export "proxy_on_memory_allocate") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
  (func (export "proxy_on_context_create") (param i32 i32))
  (func $byte (param $b i32)
    (i32.store8 (global.get $log) (local.get $b))
    (global.set $log (i32.add (global.get $log) (i32.const 1))))
  (func $append (param $ptr i32) (param $len i32)
    (memory.copy (global.get $log) (local.get $ptr) (local.get $len))
    (global.set $log (i32.add (global.get $log) (local.get $len))))
  ;; Appends the value of header KEY in MAP, or '-'.
  (func $append_header (param $map i32) (param $key i32) (param $len i32)
    (if (call $get (local.get $map) (local.get $key) (local.get $len) (i32.const 200) (i32.const 204))
      (then (call $byte (i32.const 45)))
      (else (call $append (i32.load (i32.const 200)) (i32.load (i32.const 204))))))
  ;; The log as x-grpc-log on the request.
  (func $publish
    (drop (call $add (i32.const 0) (i32.const 144) (i32.const 10) (i32.const 1024) (i32.sub (global.get $log) (i32.const 1024)))))
  (func $status_digit (param $s i32)
    (call $byte (i32.add (i32.const 48) (local.get $s))))
  (func (export "proxy_on_request_headers") (param $context i32) (param i32 i32) (result i32)
    (local $mode i32)
    (local $token i32)
    (local $status i32)
    (if (call $get (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 200) (i32.const 204))
      (then (return (i32.const 0))))
    (local.set $mode (i32.load8_u (i32.load (i32.const 200))))
    (if (i32.eq (local.get $mode) (i32.const 104)) ;; h
      (then
        (call $publish)
        (return (i32.const 0))))
    (global.set $waiting (local.get $context))
    (global.set $log (i32.const 1024))
    (global.set $early (i32.eq (local.get $mode) (i32.const 105)))
    ;; f: the unknown cluster `nowhere`; c: the method Refuse.
    (local.set $status (call $open
      (select (i32.const 192) (i32.const 32) (i32.eq (local.get $mode) (i32.const 102)))
      (select (i32.const 7) (i32.const 2) (i32.eq (local.get $mode) (i32.const 102)))
      (i32.const 48) (i32.const 9)
      (select (i32.const 72) (i32.const 64) (i32.eq (local.get $mode) (i32.const 99)))
      (select (i32.const 6) (i32.const 4) (i32.eq (local.get $mode) (i32.const 99)))
      (i32.const 80) (i32.const 20) (i32.const 300)))
    (call $status_digit (local.get $status))
    ;; Not opened: nothing will be heard; the request goes on.
    (if (local.get $status)
      (then
        (call $publish)
        (return (i32.const 0))))
    (local.set $token (i32.load (i32.const 300)))
    (call $byte (i32.const 83)) ;; S
    (call $status_digit (i32.and (local.get $token) (i32.const 1)))
    (call $byte (i32.const 59))
    (if (i32.or (i32.eq (local.get $mode) (i32.const 97)) (global.get $early)) ;; a, i
      (then
        (drop (call $send (local.get $token) (i32.const 160) (i32.const 3) (i32.const 0)))
        (drop (call $send (local.get $token) (i32.const 168) (i32.const 3) (i32.const 0)))
        (drop (call $close (local.get $token)))))
    (if (i32.eq (local.get $mode) (i32.const 98)) ;; b
      (then
        (drop (call $send (local.get $token) (i32.const 160) (i32.const 3) (i32.const 0)))
        (drop (call $send (local.get $token) (i32.const 176) (i32.const 9) (i32.const 0)))))
    (if (i32.eq (local.get $mode) (i32.const 103)) ;; g
      (then
        (drop (call $send (local.get $token) (i32.const 160) (i32.const 3) (i32.const 0)))
        (drop (call $close (local.get $token)))
        (return (i32.const 0))))
    (if (i32.eq (local.get $mode) (i32.const 100)) ;; d
      (then (drop (call $send (local.get $token) (i32.const 160) (i32.const 3) (i32.const 1)))))
    (if (i32.eq (local.get $mode) (i32.const 101)) ;; e
      (then
        (call $status_digit (call $cancel (local.get $token)))
        (call $status_digit (call $cancel (i32.const 9998)))
        (call $status_digit (call $send (local.get $token) (i32.const 160) (i32.const 3) (i32.const 0)))
        (call $status_digit (call $send (i32.const 1) (i32.const 160) (i32.const 3) (i32.const 0)))
        (call $status_digit (call $close (local.get $token)))
        (call $publish)
        (return (i32.const 0))))
    (i32.const 1))
  (func (export "proxy_on_grpc_receive_initial_metadata") (param i32 i32 i32)
    (call $byte (i32.const 73)) ;; I
    (call $append_header (i32.const 4) (i32.const 112) (i32.const 9))
    (call $byte (i32.const 59)))
  (func (export "proxy_on_grpc_receive") (param i32 i32) (param $size i32)
    (call $byte (i32.const 77)) ;; M
    (drop (call $buffer (i32.const 5) (i32.const 0) (local.get $size) (i32.const 200) (i32.const 204)))
    (call $append (i32.load (i32.const 200)) (i32.load (i32.const 204)))
    (call $byte (i32.const 59))
    (if (global.get $early)
      (then
        (global.set $early (i32.const 0))
        (drop (call $effective (global.get $waiting)))
        (call $publish)
        (drop (call $continue (i32.const 0))))))
  (func (export "proxy_on_grpc_receive_trailing_metadata") (param i32 i32 i32)
    (call $byte (i32.const 84)) ;; T
    (call $append_header (i32.const 5) (i32.const 128) (i32.const 11))
    (call $byte (i32.const 59)))
  (func (export "proxy_on_grpc_close") (param i32 i32) (param $code i32)
    (i64.store (i32.const 212) (i64.const 0))
    (drop (call $get_status (i32.const 208) (i32.const 212) (i32.const 216)))
    (call $byte (i32.const 67)) ;; C
    (call $byte (i32.add (i32.const 65) (local.get $code)))
    (call $append (i32.load (i32.const 212)) (i32.load (i32.const 216)))
    (call $byte (i32.const 59))
    (drop (call $effective (global.get $waiting)))
    (call $publish)
    (drop (call $continue (i32.const 0))))
)

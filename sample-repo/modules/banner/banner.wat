;; banner: a WASI module exercising all three mount stages.
;;
;;   render(n) -> 0 | -errno   reads the deployment-stage data file
;;                             greeting.txt and writes it n times (n capped
;;                             to 0..16) into the output mount out.bin.
;;   count()   -> bytes | -errno
;;                             returns the size of the execution-stage
;;                             mount in.bin.
;;
;; Errors come back as negative WASI errno values because the orchestrator's
;; only result type for these functions is a single i32.
;;
;; File access convention of the supervisor: the module's own directory is the
;; first (and only) preopen, which WASI numbers fd 3 (0-2 are stdio). Paths are
;; therefore opened relative to fd 3 and there is no fd_prestat_* discovery.
(module
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))

  ;; Exported because WASI hosts read and write through the guest's memory.
  (memory (export "memory") 1)

  ;; Memory layout (one 64 KiB page is plenty):
  ;;   0   path strings
  ;;   64  iovec {buf, len} shared by every read/write
  ;;   72  nread / nwritten result
  ;;   76  fd result of path_open
  ;;   1024 .. 1024+4097  I/O buffer (4096 bytes + 1 to detect oversize input)
  (data (i32.const 0)  "greeting.txt")  ;; 12 bytes
  (data (i32.const 16) "out.bin")       ;; 7 bytes
  (data (i32.const 32) "in.bin")        ;; 6 bytes
  (global $IOV i32 (i32.const 64))
  (global $NIO i32 (i32.const 72))
  (global $FD  i32 (i32.const 76))
  (global $BUF i32 (i32.const 1024))
  (global $CAP i32 (i32.const 4096))

  (global $ERRNO_FBIG i32 (i32.const 22))
  (global $MAX_REPEAT i32 (i32.const 16))

  ;; Opens path relative to the preopened module directory (fd 3).
  ;; Returns the new fd, or -errno. dirflags 1 = LOOKUPFLAGS_SYMLINK_FOLLOW so
  ;; the supervisor may place mounts as symlinks. Rights are requested
  ;; minimally (fd_read = 1<<1, fd_write = 1<<6); hosts that still enforce
  ;; WASI rights then grant exactly what is used.
  (func $open (param $path i32) (param $len i32) (param $oflags i32)
              (param $rights i64) (result i32)
    (local $errno i32)
    (local.set $errno
      (call $path_open (i32.const 3) (i32.const 1)
                       (local.get $path) (local.get $len) (local.get $oflags)
                       (local.get $rights) (i64.const 0) (i32.const 0)
                       (global.get $FD)))
    (if (result i32) (local.get $errno)
      (then (i32.sub (i32.const 0) (local.get $errno)))
      (else (i32.load (global.get $FD)))))

  ;; Reads fd until EOF into BUF, reading at most CAP+1 bytes so a file
  ;; larger than the buffer is detected instead of silently truncated.
  ;; Returns bytes read or -errno; the caller closes fd.
  (func $read_all (param $fd i32) (result i32)
    (local $used i32)
    (local $errno i32)
    (local $n i32)
    (block $eof
      (loop $more
        (br_if $eof (i32.gt_u (local.get $used) (global.get $CAP)))
        (i32.store (global.get $IOV) (i32.add (global.get $BUF) (local.get $used)))
        (i32.store offset=4 (global.get $IOV)
          (i32.sub (i32.add (global.get $CAP) (i32.const 1)) (local.get $used)))
        (local.set $errno
          (call $fd_read (local.get $fd) (global.get $IOV) (i32.const 1)
                         (global.get $NIO)))
        (if (local.get $errno)
          (then (return (i32.sub (i32.const 0) (local.get $errno)))))
        (local.set $n (i32.load (global.get $NIO)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $used (i32.add (local.get $used) (local.get $n)))
        (br $more)))
    (if (i32.gt_u (local.get $used) (global.get $CAP))
      (then (return (i32.sub (i32.const 0) (global.get $ERRNO_FBIG)))))
    (local.get $used))

  ;; Writes BUF[0..len) to fd, looping because fd_write may be partial.
  ;; Returns 0 or -errno.
  (func $write_all (param $fd i32) (param $len i32) (result i32)
    (local $done i32)
    (local $errno i32)
    (block $finished
      (loop $more
        (br_if $finished (i32.ge_u (local.get $done) (local.get $len)))
        (i32.store (global.get $IOV) (i32.add (global.get $BUF) (local.get $done)))
        (i32.store offset=4 (global.get $IOV)
          (i32.sub (local.get $len) (local.get $done)))
        (local.set $errno
          (call $fd_write (local.get $fd) (global.get $IOV) (i32.const 1)
                          (global.get $NIO)))
        (if (local.get $errno)
          (then (return (i32.sub (i32.const 0) (local.get $errno)))))
        (local.set $done (i32.add (local.get $done) (i32.load (global.get $NIO))))
        (br $more)))
    (i32.const 0))

  (func (export "render") (param $n i32) (result i32)
    (local $fd i32)
    (local $len i32)
    (local $rc i32)
    (local $close i32)
    ;; Clamp instead of failing: the parameter arrives from an HTTP query, and
    ;; a bounded output keeps a small device from filling its storage.
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (local.set $n (i32.const 0))))
    (if (i32.gt_s (local.get $n) (global.get $MAX_REPEAT))
      (then (local.set $n (global.get $MAX_REPEAT))))

    ;; oflags 0: the data file must already exist (shipped at deploy time).
    (local.set $fd
      (call $open (i32.const 0) (i32.const 12) (i32.const 0) (i64.const 2)))
    (if (i32.lt_s (local.get $fd) (i32.const 0))
      (then (return (local.get $fd))))
    (local.set $len (call $read_all (local.get $fd)))
    (drop (call $fd_close (local.get $fd)))
    (if (i32.lt_s (local.get $len) (i32.const 0))
      (then (return (local.get $len))))

    ;; oflags 9 = CREAT|TRUNC: the output must not keep bytes of an earlier,
    ;; longer run.
    (local.set $fd
      (call $open (i32.const 16) (i32.const 7) (i32.const 9) (i64.const 64)))
    (if (i32.lt_s (local.get $fd) (i32.const 0))
      (then (return (local.get $fd))))
    (block $stop
      (loop $again
        (br_if $stop (i32.le_s (local.get $n) (i32.const 0)))
        (local.set $rc (call $write_all (local.get $fd) (local.get $len)))
        (br_if $stop (local.get $rc))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    ;; A failing close can mean lost data, so it is reported too, unless a
    ;; write error came first.
    (local.set $close (call $fd_close (local.get $fd)))
    (if (local.get $rc) (then (return (local.get $rc))))
    (i32.sub (i32.const 0) (local.get $close)))

  (func (export "count") (result i32)
    (local $fd i32)
    (local $total i32)
    (local $errno i32)
    (local $n i32)
    (local.set $fd
      (call $open (i32.const 32) (i32.const 6) (i32.const 0) (i64.const 2)))
    (if (i32.lt_s (local.get $fd) (i32.const 0))
      (then (return (local.get $fd))))
    ;; Stream through the buffer rather than stat-ing the file: fd_filestat_get
    ;; would need another right and import, and reading also works for
    ;; non-regular files such as pipes.
    (i32.store (global.get $IOV) (global.get $BUF))
    (i32.store offset=4 (global.get $IOV) (global.get $CAP))
    (block $eof
      (loop $more
        (local.set $errno
          (call $fd_read (local.get $fd) (global.get $IOV) (i32.const 1)
                         (global.get $NIO)))
        (if (local.get $errno)
          (then
            (drop (call $fd_close (local.get $fd)))
            (return (i32.sub (i32.const 0) (local.get $errno)))))
        (local.set $n (i32.load (global.get $NIO)))
        (br_if $eof (i32.eqz (local.get $n)))
        (local.set $total (i32.add (local.get $total) (local.get $n)))
        (br $more)))
    (drop (call $fd_close (local.get $fd)))
    (local.get $total)))

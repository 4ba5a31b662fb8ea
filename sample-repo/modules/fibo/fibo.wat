;; Iterative Fibonacci: fibo(0) = 0, fibo(1) = 1, fibo(13) = 233.
;; Iterative rather than recursive so that large n costs a loop, not a deep
;; call stack, on small IoT devices.
(module
  (func $fibo (export "fibo") (param $n i32) (result i32)
    (local $a i32)
    (local $b i32)
    (local $next i32)
    (local.set $b (i32.const 1))
    (block $done
      (loop $step
        ;; Signed compare so a negative n yields 0 instead of ~4 billion
        ;; iterations.
        (br_if $done (i32.le_s (local.get $n) (i32.const 0)))
        ;; Arithmetic wraps at 2^32 (n > 46 overflows i32); the function
        ;; signature is fixed to i32 by the orchestrator's integer type.
        (local.set $next (i32.add (local.get $a) (local.get $b)))
        (local.set $a (local.get $b))
        (local.set $b (local.get $next))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $step)))
    (local.get $a)))

;; double(x) = 2x. Meant as the second step of a chain: the supervisor passes
;; the previous step's integer output as this function's first parameter.
(module
  (func $double (export "double") (param $x i32) (result i32)
    ;; Wraps on overflow, like any i32 arithmetic; no trap on purpose so a
    ;; chain never dies on an out-of-range value.
    (i32.mul (local.get $x) (i32.const 2))))

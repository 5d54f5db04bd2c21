    .text
    .globl _start
_start:
    ldr  x19, [sp]
    add  x20, sp, #8
    add  x21, x20, x19, lsl #3
    add  x21, x21, #8
    mov  x0, #4
    mov  x1, #0
    mov  x8, #167
    svc  #0
    ldr  x1, [x20, #8]
    mov  w22, #0
    ldrb w2, [x1]
    cmp  w2, #45
    b.eq .Lexec
.Ldigit:
    ldrb w2, [x1]
    cbz  w2, .Lwait
    sub  w2, w2, #48
    mov  w3, #10
    madd w22, w22, w3, w2
    add  x1, x1, #1
    b    .Ldigit
.Lwait:
    sub  sp, sp, #16
.Lread:
    mov  w0, w22
    mov  x1, sp
    mov  x2, #1
    mov  x8, #63
    svc  #0
    cmn  x0, #4
    b.eq .Lread
    cmp  x0, #1
    b.ne .Lquit
    mov  w0, w22
    mov  x1, #2
    mov  x2, #1
    mov  x8, #25
    svc  #0
    add  sp, sp, #16
.Lexec:
    ldr  x0, [x20, #16]
    add  x1, x20, #24
    mov  x2, x21
    mov  x8, #221
    svc  #0
    neg  x23, x0
    cbz  w22, .Lexit
    sub  sp, sp, #16
    mov  w2, #88
    strb w2, [sp]
    strb w23, [sp, #1]
    mov  w0, w22
    mov  x1, sp
    mov  x2, #2
    mov  x8, #64
    svc  #0
.Lexit:
    mov  x0, #126
    cmp  x23, #2
    b.ne 1f
    mov  x0, #127
1:  mov  x8, #94
    svc  #0
.Lquit:
    mov  x0, #1
    mov  x8, #94
    svc  #0

    .text
    .globl _start
_start:
    mov    (%rsp), %r12              # argc
    lea    8(%rsp), %r13             # argv
    lea    16(%rsp,%r12,8), %r14     # envp
    mov    $157, %eax                # prctl(PR_SET_DUMPABLE, 0)
    mov    $4, %edi
    xor    %esi, %esi
    syscall
    mov    8(%r13), %rsi             # argv[1]: the fifo fd, or "-" for none
    xor    %r15d, %r15d
    cmpb   $'-', (%rsi)
    je     .Lexec
.Ldigit:
    movzbl (%rsi), %eax
    test   %eax, %eax
    jz     .Lwait
    sub    $'0', %eax
    imul   $10, %r15d, %r15d
    add    %eax, %r15d
    inc    %rsi
    jmp    .Ldigit
.Lwait:
    xor    %eax, %eax                # read(fd, rsp-8, 1)
    mov    %r15d, %edi
    lea    -8(%rsp), %rsi
    mov    $1, %edx
    syscall
    cmp    $-4, %rax                 # EINTR: again
    je     .Lwait
    cmp    $1, %rax
    jne    .Lquit
    mov    $72, %eax                 # fcntl(fd, F_SETFD, FD_CLOEXEC)
    mov    %r15d, %edi
    mov    $2, %esi
    mov    $1, %edx
    syscall
.Lexec:
    mov    $59, %eax                 # execve(argv[2], &argv[3], envp)
    mov    16(%r13), %rdi
    lea    24(%r13), %rsi
    mov    %r14, %rdx
    syscall
    neg    %rax                      # errno
    mov    %eax, %ebx
    test   %r15d, %r15d
    jz     .Lexit
    movb   $'X', -8(%rsp)            # tell `start`: "X" and the errno byte
    mov    %bl, -7(%rsp)
    mov    $1, %eax                  # write(fd, rsp-8, 2)
    mov    %r15d, %edi
    lea    -8(%rsp), %rsi
    mov    $2, %edx
    syscall
.Lexit:
    mov    $126, %edi                # 127 for ENOENT, 126 otherwise (as shells)
    cmp    $2, %ebx
    jne    1f
    mov    $127, %edi
1:  mov    $231, %eax                # exit_group
    syscall
.Lquit:
    mov    $231, %eax                # exit_group(1): the fifo closed without a start
    mov    $1, %edi
    syscall

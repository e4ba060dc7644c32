/*
 * colo-test-guest: a tiny multiboot (v1) kernel for colo's tests.
 *
 * Loaded by QEMU's -kernel at 1 MiB (see guest.ld; QEMU wants a 32-bit ELF,
 * so the build links for x86-64 and converts with objcopy -O elf32-i386).
 * The 32-bit multiboot entry sets up identity paging of the low 4 GiB
 * (2 MiB pages), enters long mode and drops to ring 3 with IOPL=3 and
 * interrupts off; everything else runs there as 64-bit user code that may
 * still use port I/O (COM1, the PIT). Why ring 3: some KVM hosts (e.g. the
 * PVM flavour of KVM, which runs guests without VMX) emulate a guest's
 * kernel mode instruction by instruction (~1 M instructions/s) but run its
 * user mode natively; under VMX KVM and TCG ring 3 costs nothing extra.
 * Layout and the status page: guest_abi.h.
 *
 * Modes (chosen on the multiboot command line, QEMU's -append):
 *   (default)            counter mode: increment the u32 at
 *                        TGUEST_STATUS_GPA + TGUEST_COUNTER_OFF forever.
 *   dirty=<MiB>          dirty mode: keep rewriting <MiB> MiB from
 *   [rate=<MiB/s>]       TGUEST_DIRTY_GPA up (clamped to the RAM multiboot
 *                        reports) with non-zero data that changes every
 *                        pass; TGUEST_PASSES_OFF counts full passes, the
 *                        counter goes up once per 4 KiB page written (and
 *                        while waiting for the rate limiter). rate=0 or no
 *                        rate= means flat out.
 *
 * Serial (COM1, 0x3f8, LSR bit 5 polled before each byte): one line
 * "colo-test-guest mode=<8 hex digits>\n" at boot, then
 * "tick <8 hex digits of the counter>\n" every TGUEST_TICK_MS (250) ms of real
 * time, so the log grows by a few lines per second under KVM and TCG alike
 * (a fixed number of increments would tick 10-50x slower under TCG).
 *
 * Time: the TSC, calibrated once at boot against PIT channel 2 (gated
 * through port 0x61, mode 0, a 10 ms count; we poll its OUT, bit 5 of port
 * 0x61). Under KVM the TSC is the hardware's, under TCG QEMU derives it
 * from the host clock; the PIT runs on QEMU's virtual clock in both, so the
 * calibration gives TSC ticks per real 10 ms either way.
 *
 * Rate limiting: a MiB budget. Before writing MiB number k of the run the
 * guest spins (incrementing the counter) until the TSC reaches
 * start + k * tsc_per_mib; when more than one second behind, it forgets the
 * debt, so a VM that was paused does not burst afterwards.
 */
#include "guest_abi.h"

#define MB_MAGIC         0x1badb002
#define MB_FLAGS         0x00000002 /* ask for the memory info */
#define MB_BOOT_MAGIC    0x2badb002
#define MBI_FLAG_MEM     0x1
#define MBI_FLAG_CMDLINE 0x4

#define COM1    0x3f8
#define PIT_10MS 11932 /* 1193182 Hz / 100 */
#define COUNTER_SPIN 1000 /* loop iterations between increments */

#define SEL_CODE32 0x08
#define SEL_DATA   0x10
#define SEL_CODE64 0x18
#define SEL_UCODE  (0x20 | 3)
#define SEL_UDATA  (0x28 | 3)

#define STATUS(off) (TGUEST_STATUS_GPA + (off))

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

/* ---- 32-bit entry: paging, long mode, ring 3 ------------------------- */
        .section .text
        .code32
        .globl _start
_start:
        cli
        cld
        lgdt gdt_desc
        ljmp $SEL_CODE32, $1f           /* CS from our own GDT */
1:      movl $SEL_DATA, %ecx
        movl %ecx, %ds
        movl %ecx, %es
        movl %ecx, %ss
        movl $stack_top, %esp
        movl %eax, %ebp                 /* keep the boot magic ... */
        movl %ebx, %esi                 /* ... and the info pointer */

        /* Identity map 0-4 GiB with 2 MiB pages, user accessible:
         * pml4[0] -> pdpt, pdpt[0..3] -> pd[0..3]. Every entry is written
         * (the RAM may hold an earlier boot's data). */
        movl $pml4, %edi
        xorl %eax, %eax
        movl $(2 * 4096 / 4), %ecx      /* pml4 and pdpt */
        rep stosl
        movl $pd, %eax
        movl $pdpt, %edi
        movl $4, %ecx
2:      leal 7(%eax), %edx
        movl %edx, (%edi)
        addl $4096, %eax
        addl $8, %edi
        loop 2b
        movl $(pdpt + 7), pml4          /* present, writable, user */
        movl $pd, %edi
        movl $0x87, %eax                /* present, writable, user, 2M */
        movl $(4 * 512), %ecx
3:      movl %eax, (%edi)
        movl $0, 4(%edi)
        addl $0x200000, %eax
        addl $8, %edi
        loop 3b

        movl $pml4, %eax
        movl %eax, %cr3
        movl %cr4, %eax
        orl $0x20, %eax                 /* PAE */
        movl %eax, %cr4
        movl $0xc0000080, %ecx          /* EFER.LME */
        rdmsr
        orl $0x100, %eax
        wrmsr
        movl %cr0, %eax
        orl $0x80000001, %eax           /* PG, PE */
        movl %eax, %cr0
        ljmp $SEL_CODE64, $long_mode

        .code64
long_mode:
        /* To ring 3: IOPL=3 (port I/O allowed), IF=0. */
        movl $stack_top, %eax
        pushq $SEL_UDATA
        pushq %rax
        pushq $0x3002
        pushq $SEL_UCODE
        movl $user_main, %eax
        pushq %rax
        iretq

/* ---- 64-bit ring 3 from here on -------------------------------------- */
/* ebp = multiboot magic, esi = multiboot info. */
user_main:
        movl $SEL_UDATA, %eax
        movl %eax, %ds
        movl %eax, %es
        movq $0, dirty_bytes
        movq $0, rate_mbs
        cmpl $MB_BOOT_MAGIC, %ebp
        jne parsed                      /* not multiboot: counter mode */
        testl $MBI_FLAG_MEM, (%rsi)
        jz 1f
        movl 8(%rsi), %eax              /* mem_upper: KiB above 1 MiB */
        shlq $10, %rax
        addq $0x100000, %rax
        movq %rax, ram_end
1:      testl $MBI_FLAG_CMDLINE, (%rsi)
        jz parsed
        movl 16(%rsi), %esi             /* rsi = cmdline, NUL-terminated */
        movq %rsi, cmdline
        movl $key_dirty, %edi
        call find_key_dec
        shlq $20, %rax                  /* MiB -> bytes */
        movq %rax, dirty_bytes
        movq cmdline, %rsi
        movl $key_rate, %edi
        call find_key_dec
        movq %rax, rate_mbs
parsed:
        /* Clamp the dirty region to the RAM multiboot reported. */
        movq ram_end, %rax
        andq $~0xfff, %rax
        subq $TGUEST_DIRTY_GPA, %rax    /* room above DIRTY_GPA */
        ja 1f
        xorl %eax, %eax
1:      cmpq %rax, dirty_bytes
        jbe 2f
        movq %rax, dirty_bytes
2:
        call calibrate_tsc
        call next_tick_init

        /* Publish the status page; the magic goes last. */
        xorl %eax, %eax
        movl %eax, STATUS(TGUEST_COUNTER_OFF)
        movl %eax, STATUS(TGUEST_PASSES_OFF)
        cmpq $0, dirty_bytes
        setne %al
        movl %eax, STATUS(TGUEST_MODE_OFF)
        movl $TGUEST_MAGIC, STATUS(TGUEST_MAGIC_OFF)

        movl $msg_boot, %esi
        call puts
        movl STATUS(TGUEST_MODE_OFF), %eax
        call puthex
        movb $'\n', %al
        call putc

        cmpq $0, dirty_bytes
        jne dirty_mode

/* ---- counter mode ---------------------------------------------------- */
/* A short spin between increments keeps the 32-bit counter from wrapping
 * within seconds (bare "incl" runs at several 10^9/s under KVM). */
counter_mode:
        movl $256, %ebx                 /* increments per tick check */
1:      incl STATUS(TGUEST_COUNTER_OFF)
        movl $COUNTER_SPIN, %ecx
2:      decl %ecx
        jnz 2b
        decl %ebx
        jnz 1b
        call maybe_tick
        jmp counter_mode

/* ---- dirty mode ------------------------------------------------------ */
/*
 * Pass p writes the dword at address a as ((a ^ key_p) | 1) with
 * key_p = p * TGUEST_DIRTY_KEY_MUL: never zero, and different from the previous
 * pass in every dword (consecutive keys differ by an odd constant > 1).
 * Registers: ebx = key, rdi = write pointer, r8 = end of the region.
 */
dirty_mode:
        movq rate_mbs, %rcx
        testq %rcx, %rcx
        jz 1f
        movq tsc_sec, %rax              /* tsc_per_mib = tsc/s / rate */
        xorl %edx, %edx
        divq %rcx
        movq %rax, tsc_mib
1:      rdtsc
        shlq $32, %rdx
        orq %rdx, %rax
        movq %rax, budget
        movq $TGUEST_DIRTY_GPA, %r8
        addq dirty_bytes, %r8

dirty_pass:
        movl STATUS(TGUEST_PASSES_OFF), %ebx
        incl %ebx
        imull $TGUEST_DIRTY_KEY_MUL, %ebx, %ebx   /* key of this pass */
        movl $TGUEST_DIRTY_GPA, %edi
dirty_mib:
        call rate_wait
        leaq 0x100000(%rdi), %r9        /* end of this MiB ... */
        cmpq %r8, %r9
        jbe dirty_page
        movq %r8, %r9                   /* ... or of the region */
dirty_page:
        leaq 4096(%rdi), %rcx           /* end of this page */
1:      movl %edi, %eax
        xorl %ebx, %eax
        orl $1, %eax
        movl %eax, (%rdi)
        addq $4, %rdi
        cmpq %rcx, %rdi
        jb 1b
        incl STATUS(TGUEST_COUNTER_OFF)
        cmpq %r9, %rdi
        jb dirty_page
        call maybe_tick
        cmpq %r8, %rdi
        jb dirty_mib
        incl STATUS(TGUEST_PASSES_OFF)
        jmp dirty_pass

/* Rate limiter: wait until TSC >= budget, then budget += tsc_per_mib;
 * more than a second behind: restart the budget from now.
 * Clobbers rax, rcx, rdx, rsi. */
rate_wait:
        cmpq $0, rate_mbs
        je 9f
1:      rdtsc
        shlq $32, %rdx
        orq %rdx, %rax
        movq %rax, %rcx
        subq budget, %rax
        jns 2f                          /* now >= budget */
        incl STATUS(TGUEST_COUNTER_OFF)
        call maybe_tick
        jmp 1b
2:      cmpq tsc_sec, %rax
        jbe 3f
        movq %rcx, budget               /* too far behind: forget it */
3:      movq tsc_mib, %rax
        addq %rax, budget
9:      ret

/* ---- time ------------------------------------------------------------ */
/* tsc_sec = TSC ticks per second, measured over 10 ms of PIT channel 2
 * (1 GHz assumed if the PIT never answers). Clobbers rax, rcx, rdx, rsi. */
calibrate_tsc:
        inb $0x61, %al
        andb $0xfc, %al                 /* gate off, speaker off */
        outb %al, $0x61
        movb $0xb0, %al                 /* channel 2, lo/hi, mode 0, bin */
        outb %al, $0x43
        movb $(PIT_10MS & 0xff), %al
        outb %al, $0x42
        movb $(PIT_10MS >> 8), %al
        outb %al, $0x42
        inb $0x61, %al
        orb $0x01, %al                  /* gate on: counting starts */
        outb %al, $0x61
        rdtsc
        shlq $32, %rdx
        orq %rdx, %rax
        movq %rax, %rcx
        movl $(1 << 22), %esi           /* bound: no PIT must not hang us */
1:      decl %esi
        jz 3f
        inb $0x61, %al                  /* OUT2 goes high at terminal */
        testb $0x20, %al
        jz 1b
        rdtsc
        shlq $32, %rdx
        orq %rdx, %rax
        subq %rcx, %rax
        jnz 2f
        incq %rax
2:      imulq $100, %rax
4:      movq %rax, tsc_sec
        imulq $TGUEST_TICK_MS, %rax
        xorl %edx, %edx
        movl $1000, %ecx
        divq %rcx
        movq %rax, tsc_tick
        ret
3:      movq $1000000000, %rax          /* no PIT answer: assume 1 GHz */
        jmp 4b

/* next_tick = now + tsc_tick. Clobbers rax, rdx. */
next_tick_init:
        rdtsc
        shlq $32, %rdx
        orq %rdx, %rax
        addq tsc_tick, %rax
        movq %rax, next_tick
        ret

/* Print "tick <counter>" once the TSC passed next_tick.
 * Clobbers rax, rcx, rdx, rsi; keeps rbx, rdi, r8, r9. */
maybe_tick:
        rdtsc
        shlq $32, %rdx
        orq %rdx, %rax
        cmpq next_tick, %rax
        jb 1f
        call next_tick_init
        movl $msg_tick, %esi
        call puts
        movl STATUS(TGUEST_COUNTER_OFF), %eax
        call puthex
        movb $'\n', %al
        call putc
1:      ret

/* ---- command line ---------------------------------------------------- */
/*
 * find_key_dec: rsi = NUL-terminated string, rdi = NUL-terminated key
 * ("dirty="). Returns in rax the decimal number after the first occurrence
 * of key at the start of the string or after a space; 0 when absent.
 * Clobbers rcx, rdx, rsi.
 */
find_key_dec:
        movb $' ', %dl                  /* dl = previous character */
1:      cmpb $0, (%rsi)
        je 8f
        cmpb $' ', %dl
        jne 3f
        xorl %ecx, %ecx                 /* compare key at rsi */
2:      movb (%rdi,%rcx), %al
        testb %al, %al
        jz 5f                           /* the whole key matched */
        cmpb (%rsi,%rcx), %al
        jne 3f
        incq %rcx
        jmp 2b
3:      movb (%rsi), %dl
        incq %rsi
        jmp 1b
5:      addq %rcx, %rsi
        xorl %eax, %eax
6:      movzbl (%rsi), %ecx
        subl $'0', %ecx
        cmpl $9, %ecx
        ja 9f
        imulq $10, %rax
        addq %rcx, %rax
        incq %rsi
        jmp 6b
8:      xorl %eax, %eax
9:      ret

/* ---- serial ---------------------------------------------------------- */
/* putc: al = byte; waits for THR empty (LSR bit 5). Clobbers rdx. */
putc:
        pushq %rax
        movw $(COM1 + 5), %dx
1:      inb %dx, %al
        testb $0x20, %al
        jz 1b
        popq %rax
        movw $COM1, %dx
        outb %al, %dx
        ret

/* puts: rsi = NUL-terminated string. Clobbers rax, rdx, rsi. */
puts:
1:      movb (%rsi), %al
        testb %al, %al
        jz 2f
        call putc
        incq %rsi
        jmp 1b
2:      ret

/* puthex: eax as 8 lowercase hex digits. Clobbers rax, rcx, rdx. */
puthex:
        movl $8, %ecx
1:      roll $4, %eax
        pushq %rax
        andl $0xf, %eax
        movb hexdigits(%rax), %al
        call putc
        popq %rax
        decl %ecx
        jnz 1b
        ret

/* ---- data ------------------------------------------------------------ */
        .section .rodata
        .align 8
gdt:
        .quad 0                         /* null */
        .quad 0x00cf9a000000ffff        /* 0x08: code32, ring 0 */
        .quad 0x00cf92000000ffff        /* 0x10: data, ring 0 */
        .quad 0x00af9a000000ffff        /* 0x18: code64, ring 0 */
        .quad 0x00affa000000ffff        /* 0x20: code64, ring 3 */
        .quad 0x00cff2000000ffff        /* 0x28: data, ring 3 */
gdt_desc:
        .word gdt_desc - gdt - 1
        .long gdt
hexdigits:
        .ascii "0123456789abcdef"
key_dirty:
        .asciz "dirty="
key_rate:
        .asciz "rate="
msg_boot:
        .asciz "colo-test-guest mode="
msg_tick:
        .asciz "tick "

        .section .data
        .align 8
ram_end:     .quad 0x08000000           /* no memory info: 128 MiB */
cmdline:     .quad 0
dirty_bytes: .quad 0
rate_mbs:    .quad 0
tsc_sec:     .quad 0
tsc_tick:    .quad 0
next_tick:   .quad 0
tsc_mib:     .quad 0
budget:      .quad 0

        .section .bss
        .align 4096
pml4:   .skip 4096
pdpt:   .skip 4096
pd:     .skip 4 * 4096
stack:  .skip 4096
stack_top:

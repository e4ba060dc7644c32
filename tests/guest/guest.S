/*
 * colo-test-guest: a tiny multiboot (v1) kernel for colo's tests.
 *
 * Loaded by QEMU's -kernel at 1 MiB (see guest.ld); runs in 32-bit protected
 * mode with a flat GDT, no paging and interrupts disabled. Layout and the
 * status page are described in guest_abi.h.
 *
 * Modes (chosen on the multiboot command line, QEMU's -append):
 *   (default)            counter mode: increment the u32 at
 *                        TGUEST_STATUS_GPA + TGUEST_COUNTER_OFF forever.
 *   dirty=<MiB>          dirty mode: keep rewriting <MiB> MiB from
 *   [rate=<MiB/s>]       TGUEST_DIRTY_GPA up (clamped to the RAM that
 *                        multiboot reports) with non-zero data that changes
 *                        every pass; TGUEST_PASSES_OFF counts full passes,
 *                        the counter goes up once per 4 KiB page written
 *                        (and while waiting for the rate limiter).
 *                        rate=0 or no rate= means flat out.
 *
 * Serial (COM1, 0x3f8, polled): one "colo-test-guest mode=<m>\n" line at
 * boot, then "tick <8 hex digits of the counter>\n" every TICK_MS (250) ms
 * of real time, so the log grows a few lines per second under KVM and TCG
 * alike (a fixed increment count would tick 10-50x slower under TCG).
 *
 * Time: the TSC, calibrated once at boot against PIT channel 2 (gated
 * through port 0x61, mode 0, a 10 ms count; we poll the OUT bit 5 of port
 * 0x61). Under KVM the TSC is the hardware's; under TCG QEMU derives it
 * from the host clock. Either way the PIT runs on QEMU's virtual clock, so
 * the calibration gives real TSC ticks per 10 ms in both.
 *
 * Rate limiting: a MiB budget. Before writing MiB number k of the run, the
 * guest waits (incrementing the counter) until the TSC reaches
 * start + k * tsc_per_mib; when it falls more than one second behind it
 * forgets the debt, so a paused VM does not burst afterwards.
 */
#include "guest_abi.h"

#define MB_MAGIC       0x1badb002
#define MB_FLAGS       0x00000002 /* ask for the memory info */
#define MB_BOOT_MAGIC  0x2badb002
#define MBI_FLAG_MEM   0x1
#define MBI_FLAG_CMDLINE 0x4

#define COM1           0x3f8
#define PIT_10MS       11932 /* 1193182 Hz / 100 */
#define TICK_MS        250

#define STATUS(off)    (TGUEST_STATUS_GPA + (off))

        .code32
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

        .section .text
        .globl _start
_start:
        cli
        cld
        lgdt gdt_desc
        ljmp $0x08, $1f                 /* reload CS from our own GDT */
1:      movl $0x10, %ecx
        movl %ecx, %ds
        movl %ecx, %es
        movl %ecx, %ss
        movl %ecx, %fs
        movl %ecx, %gs
        movl $stack_top, %esp

        /* Defaults: counter mode, dirty region = 0, rate = 0. */
        movl $0, dirty_bytes
        movl $0, rate_mbs
        cmpl $MB_BOOT_MAGIC, %eax
        jne parsed                      /* not multiboot: counter mode */
        movl %ebx, %esi                 /* esi = multiboot info */
        testl $MBI_FLAG_MEM, (%esi)
        jz 2f
        movl 8(%esi), %eax              /* mem_upper in KiB above 1 MiB */
        shll $10, %eax
        addl $0x100000, %eax
        movl %eax, ram_end
2:      testl $MBI_FLAG_CMDLINE, (%esi)
        jz parsed
        movl 16(%esi), %esi             /* esi = cmdline (NUL-terminated) */
        movl %esi, cmdline

        movl $key_dirty, %edi
        call find_key_dec
        shll $20, %eax                  /* MiB -> bytes */
        movl %eax, dirty_bytes
        movl cmdline, %esi
        movl $key_rate, %edi
        call find_key_dec
        movl %eax, rate_mbs
parsed:
        /* Clamp the dirty region to the RAM multiboot reported. */
        movl ram_end, %eax
        andl $~0xfff, %eax
        subl $TGUEST_DIRTY_GPA, %eax    /* eax = room above DIRTY_GPA */
        ja 1f
        xorl %eax, %eax                 /* RAM ends below the dirty area */
1:      cmpl %eax, dirty_bytes
        jbe 2f
        movl %eax, dirty_bytes
2:
        call calibrate_tsc
        call next_tick_init

        /* Publish the status page; the magic goes last. */
        xorl %eax, %eax
        movl %eax, STATUS(TGUEST_COUNTER_OFF)
        movl %eax, STATUS(TGUEST_PASSES_OFF)
        cmpl $0, dirty_bytes
        setne %al
        movl %eax, STATUS(TGUEST_MODE_OFF)
        movl $TGUEST_MAGIC, STATUS(TGUEST_MAGIC_OFF)

        movl $msg_boot, %esi
        call puts
        movl STATUS(TGUEST_MODE_OFF), %eax
        call puthex
        movb $'\n', %al
        call putc

        cmpl $0, dirty_bytes
        jne dirty_mode

/* ---- counter mode ---------------------------------------------------- */
counter_mode:
        movl $4096, %ecx
1:      incl STATUS(TGUEST_COUNTER_OFF)
        decl %ecx
        jnz 1b
        call maybe_tick
        jmp counter_mode

/* ---- dirty mode ------------------------------------------------------ */
/*
 * Pass p writes the dword at address a as ((a ^ key_p) | 1) with
 * key_p = p * 0x9e3779b9: never zero, and different from the previous
 * pass in every dword (consecutive keys differ above bit 0).
 */
dirty_mode:
        /* tsc_per_mib = tsc_per_10ms * 100 / rate (64-bit by 32-bit). */
        movl rate_mbs, %ecx
        testl %ecx, %ecx
        jz 1f
        movl tsc_10ms, %eax
        movl $100, %edx
        mull %edx                       /* edx:eax = tsc per second */
        movl %eax, %ebx
        movl %edx, %eax
        xorl %edx, %edx
        divl %ecx
        movl %eax, tsc_mib + 4
        movl %ebx, %eax
        divl %ecx
        movl %eax, tsc_mib
1:      rdtsc
        movl %eax, budget
        movl %edx, budget + 4

dirty_pass:
        movl STATUS(TGUEST_PASSES_OFF), %ebx
        incl %ebx
        imull $0x9e3779b9, %ebx         /* ebx = key of this pass */
        movl $TGUEST_DIRTY_GPA, %edi
dirty_mib:
        call rate_wait
        leal 0x100000(%edi), %edx       /* edx = end of this MiB */
        movl $TGUEST_DIRTY_GPA, %eax
        addl dirty_bytes, %eax
        cmpl %eax, %edx
        jbe dirty_page
        movl %eax, %edx                 /* last, partial MiB */
dirty_page:
        leal 4096(%edi), %ecx           /* ecx = end of this page */
1:      movl %edi, %eax
        xorl %ebx, %eax
        orl $1, %eax
        movl %eax, (%edi)
        addl $4, %edi
        cmpl %ecx, %edi
        jb 1b
        incl STATUS(TGUEST_COUNTER_OFF)
        cmpl %edx, %edi
        jb dirty_page
        call maybe_tick
        movl $TGUEST_DIRTY_GPA, %eax
        addl dirty_bytes, %eax
        cmpl %eax, %edi
        jb dirty_mib
        incl STATUS(TGUEST_PASSES_OFF)
        jmp dirty_pass

/*
 * Rate limiter: wait until TSC >= budget, then budget += tsc_per_mib.
 * If more than one second behind, restart the budget from now.
 * Clobbers eax-edx, esi; preserves ebx, edi.
 */
rate_wait:
        cmpl $0, rate_mbs
        je 9f
1:      rdtsc
        subl budget, %eax
        sbbl budget + 4, %edx
        jns 2f                          /* now >= budget */
        incl STATUS(TGUEST_COUNTER_OFF)
        call maybe_tick
        jmp 1b
2:      /* edx:eax = now - budget; behind by more than a second? */
        pushl %eax
        pushl %edx
        movl tsc_10ms, %eax
        movl $100, %ecx
        mull %ecx
        movl %eax, %ecx                 /* edx:ecx = tsc per second */
        movl %edx, %esi
        popl %edx
        popl %eax
        cmpl %esi, %edx
        jb 3f
        ja 4f
        cmpl %ecx, %eax
        jbe 3f
4:      rdtsc                           /* too far behind: forget it */
        movl %eax, budget
        movl %edx, budget + 4
3:      movl tsc_mib, %eax
        addl %eax, budget
        movl tsc_mib + 4, %eax
        adcl %eax, budget + 4
9:      ret

/* ---- time ------------------------------------------------------------ */
/* tsc_10ms = TSC ticks during 10 ms of PIT channel 2. */
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
        movl %eax, %ebx
        movl %edx, %ecx
1:      inb $0x61, %al                  /* OUT2 goes high at terminal */
        testb $0x20, %al
        jz 1b
        rdtsc
        subl %ebx, %eax
        sbbl %ecx, %edx
        jz 2f
        movl $0xffffffff, %eax          /* absurd: saturate */
2:      testl %eax, %eax
        jnz 3f
        incl %eax
3:      movl %eax, tsc_10ms
        /* tsc per tick = tsc_10ms * TICK_MS / 10 (fits: < 2^32 * 25) */
        movl $(TICK_MS / 10), %ecx
        mull %ecx
        movl %eax, tsc_tick
        movl %edx, tsc_tick + 4
        ret

next_tick_init:
        rdtsc
        addl tsc_tick, %eax
        adcl tsc_tick + 4, %edx
        movl %eax, next_tick
        movl %edx, next_tick + 4
        ret

/* Print "tick <counter>" when the TSC passed next_tick. Clobbers eax-edx,
 * esi; preserves ebx, edi. */
maybe_tick:
        rdtsc
        subl next_tick, %eax
        sbbl next_tick + 4, %edx
        js 1f
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
 * find_key_dec: esi = NUL-terminated string, edi = NUL-terminated key
 * ("dirty="). Returns in eax the decimal number after the first occurrence
 * of key that starts the string or follows a space, 0 when absent.
 */
find_key_dec:
        pushl %ebx
        movl $' ', %ebx                 /* bl = previous character */
1:      cmpb $0, (%esi)
        je 8f
        cmpb $' ', %bl
        jne 3f
        xorl %ecx, %ecx                 /* compare key at esi */
2:      movb (%edi,%ecx), %al
        testb %al, %al
        jz 5f                           /* whole key matched */
        cmpb (%esi,%ecx), %al
        jne 3f
        incl %ecx
        jmp 2b
3:      movb (%esi), %bl
        incl %esi
        jmp 1b
5:      addl %ecx, %esi
        xorl %eax, %eax
6:      movzbl (%esi), %ecx
        subl $'0', %ecx
        cmpl $9, %ecx
        ja 9f
        imull $10, %eax
        addl %ecx, %eax
        incl %esi
        jmp 6b
8:      xorl %eax, %eax
9:      popl %ebx
        ret

/* ---- serial ---------------------------------------------------------- */
/* putc: al = byte. Waits for THR empty (LSR bit 5). Clobbers edx. */
putc:
        pushl %eax
        movw $(COM1 + 5), %dx
1:      inb %dx, %al
        testb $0x20, %al
        jz 1b
        popl %eax
        movw $COM1, %dx
        outb %al, %dx
        ret

/* puts: esi = NUL-terminated string. Clobbers eax, edx, esi. */
puts:
1:      movb (%esi), %al
        testb %al, %al
        jz 2f
        call putc
        incl %esi
        jmp 1b
2:      ret

/* puthex: eax as 8 lowercase hex digits. Clobbers eax, ecx, edx. */
puthex:
        movl $8, %ecx
1:      roll $4, %eax
        pushl %eax
        andl $0xf, %eax
        movb hexdigits(%eax), %al
        call putc
        popl %eax
        decl %ecx
        jnz 1b
        ret

/* ---- data ------------------------------------------------------------ */
        .section .rodata
        .align 8
gdt:
        .quad 0                         /* null */
        .quad 0x00cf9a000000ffff        /* 0x08: code, flat 4 GiB */
        .quad 0x00cf92000000ffff        /* 0x10: data, flat 4 GiB */
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
ram_end:    .long 0x08000000            /* no memory info: assume 128 MiB */
cmdline:    .long 0
dirty_bytes: .long 0
rate_mbs:   .long 0
tsc_10ms:   .long 0
        .align 8
tsc_tick:   .quad 0
next_tick:  .quad 0
tsc_mib:    .quad 0
budget:     .quad 0

        .section .bss
        .align 16
stack:  .skip 4096
stack_top:

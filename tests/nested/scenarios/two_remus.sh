# two_remus (by hand, not in ctest): the control experiment for COLO
# mode's failures (docs/nested.md, "Two running guests"). COLO keeps two
# guests running in one host (the primary and the standby's copy), each
# suspended and resumed at every checkpoint. This scenario does the same
# with colo's Remus, which passes every run with one guest: two PVH tick
# guests, each protected by its own `colo protect --mode remus` to its own
# standby in this dom0, at once, NESTED_CHECKPOINTS (default 250) each at
# 200 ms. No COLO code runs.
# A guest that shuts down on its own (triple fault: reason reboot; kernel
# panic: reason crash) is kept (on_reboot/on_crash "preserve") and dumped
# (nl_guest_dump; pass --copy System.map to nested-run for symbols).
# Last line:
#   two_remus: t1 <status> <last checkpoint reported>, t2 ..., <N> triple faults
# Exit status 0 if both protections ran to the end, 1 if not.
# shellcheck source=../nested-lib.sh
. "$NESTED_LIB"

n=${NESTED_CHECKPOINTS:-250}
printf 'colo-nested-test-key-0123456789' >/tmp/key && chmod 600 /tmp/key
for g in 1 2; do
    {
        nl_tick_cfg "t$g" pvh
        echo 'on_reboot = "preserve"'
    } >"/tmp/t$g.cfg"
    xl create "/tmp/t$g.cfg" || nl_fail "xl create t$g"
done
for g in 1 2; do
    nl_wait_ticks "t$g" 3 120 || nl_fail "t$g does not tick"
done
# standby G / protect G: guest tG's pair on port 879G, logs in /tmp.
standby() {
    $COLO standby --listen "127.0.0.1:879$1" --key-file /tmp/key \
        >"/tmp/standby$1.log" 2>&1
}
protect() {
    $COLO protect "t$1" "127.0.0.1:879$1" --key-file /tmp/key --mode remus \
        --interval 200 --count "$n" >"/tmp/protect$1.log" 2>&1
}
standby 1 &
sb1=$!
standby 2 &
sb2=$!
nl_wait_log /tmp/standby1.log "waiting for a primary" 60 "$sb1" || nl_fail "standby 1"
nl_wait_log /tmp/standby2.log "waiting for a primary" 60 "$sb2" || nl_fail "standby 2"
t0=$(nl_now_ms)
protect 1 &
pr1=$!
protect 2 &
pr2=$!
nl_wait_pid "$pr1" 1200
rc1=$nl_pid_rc
nl_wait_pid "$pr2" 1200
rc2=$nl_pid_rc
echo "both ended after $(($(nl_now_ms) - t0)) ms"
tail -n 4 /tmp/protect1.log /tmp/protect2.log
# the last checkpoint each reported ("checkpoint N acked", every tenth)
last_ack() { sed -n 's/^checkpoint \([0-9]*\) acked.*/\1/p' "$1" | tail -n 1; }
c1=$(last_ack /tmp/protect1.log)
c2=$(last_ack /tmp/protect2.log)
tf=$(xl dmesg | grep -c 'Triple fault')
ok=0
[ "$rc1" = 0 ] && [ "$rc2" = 0 ] && ok=1
[ $ok = 1 ] || nl_guest_dump
nl_kill_tree "$sb1"
nl_kill_tree "$sb2"
echo "two_remus: t1 $rc1 $c1, t2 $rc2 $c2, $tf triple faults"
[ $ok = 1 ]

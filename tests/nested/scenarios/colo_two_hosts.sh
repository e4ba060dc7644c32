# nested.colo_two_hosts: colo across two nested Xen hosts joined by the
# socket netdev (10.99.0.1 <-> 10.99.0.2):
#   1. colo migrate of a PVH tick guest from host 1 to host 2 (colo receive
#      on host 2); the ticks on host 2 continue host 1's.
#   2. colo protect from host 2 back to host 1 (colo standby on host 1),
#      30 checkpoints; then the primary dies on host 2 (colo and its helper
#      SIGKILLed, the domain destroyed: the host is gone as far as the guest
#      is concerned). Host 1's tie-breaker confirms it (it waits for a file
#      host 2 writes once its domain is destroyed: the test's STONITH), and
#      the standby
#      runs the guest from the last committed checkpoint; its ticks go on.
# The hosts meet through files in /share.
. "$NESTED_LIB"
nl_need_colo
me=/share/host$COLO_HOST_ID
peer=/share/host$((3 - COLO_HOST_ID))
printf 'colo-nested-two-hosts-key-012345' >/tmp/key && chmod 600 /tmp/key

if [ "$COLO_HOST_ID" = 2 ]; then
    nl_wait_peer "$peer/net-up" 240 || nl_fail "host 1 never came up"
    ping -c 2 -W 5 "$COLO_PEER_IP" || nl_fail "no ping to host 1"
    # 1. receive the guest
    $COLO receive --listen "$COLO_IP:8790" --key-file /tmp/key >"$me/receive.log" 2>&1 &
    rv=$!
    nl_wait_log "$me/receive.log" "waiting for a primary" 60 $rv || nl_fail "colo receive"
    touch "$me/listening"
    nl_wait_pid $rv 300
    cat "$me/receive.log"
    [ "$nl_pid_rc" = 0 ] || nl_fail "colo receive exited with $nl_pid_rc"
    [ -n "$(nl_domid tick)" ] || nl_fail "no domain tick on host 2"
    nl_wait_peer "$peer/migrated" 60 || nl_fail "host 1 did not finish"
    last1=$(cat "$peer/last-tick")
    first2=$(nl_ticks_min tick)
    echo "host 1 last tick $last1, host 2 first tick $first2"
    [ "$first2" -ge "$last1" ] || nl_fail "ticks on host 2 do not continue host 1's"
    nl_wait_ticks tick $((first2 + 3)) 60 || nl_fail "the guest does not tick on host 2"
    nl_check_ticks tick 0 || nl_fail "ticks on host 2 not continuous"
    # 2. protect it back to host 1, then die as its primary
    nl_wait_peer "$peer/standby" 120 || nl_fail "host 1 has no standby"
    $COLO protect tick "$COLO_PEER_IP:8792" --key-file /tmp/key --interval 200 \
        >"$me/protect.log" 2>&1 &
    pr=$!
    t0=$(nl_now_ms)
    nl_wait_log "$me/protect.log" "checkpoint 30 acked" 600 $pr ||
        { cat "$me/protect.log"; nl_fail "30 checkpoints"; }
    echo "protect_30 $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
    nl_ticks_max tick >"$me/last-tick"
    cat "$me/protect.log"
    # The primary host dies: run.sh ends with colo still protecting, and
    # dom0's init powers the host off at once (poweroff -f): Xen, colo,
    # its helper and the running domain go with it, and its QEMU ends.
    touch "$me/dying"
    exit 0
fi

# Host 1: the sender, then the standby.
touch "$me/net-up"
nl_start_tick tick pvh
nl_wait_peer "$peer/listening" 300 || nl_fail "host 2 does not listen"
nl_time migrate_remote $COLO migrate tick "$COLO_PEER_IP:8790" --key-file /tmp/key
rc=$?
nl_ticks_max tick >"$me/last-tick"
touch "$me/migrated"
[ $rc = 0 ] || nl_fail "colo migrate to host 2 failed ($rc)"
[ -z "$(nl_domid tick)" ] || nl_fail "tick still on host 1 after migrate"
nl_check_ticks tick || nl_fail "ticks on host 1 not continuous"
rm -f /var/log/xen/console/guest-tick*.log
# The tie-breaker confirms the primary host is gone: host 2 no longer
# answers ping (up to 8 tries of 1 s, within colo's 10 s).
$COLO standby --listen "$COLO_IP:8792" --key-file /tmp/key \
    --fence-cmd "i=0; while ping -c 1 -W 1 $COLO_PEER_IP >/dev/null 2>&1; do i=\$((i + 1)); [ \$i -lt 8 ] || exit 1; done" \
    >"$me/standby.log" 2>&1 &
sb=$!
nl_wait_log "$me/standby.log" "waiting for a primary" 60 $sb || nl_fail "colo standby"
touch "$me/standby"
nl_wait_peer "$peer/dying" 900 || { cat "$me/standby.log"; nl_fail "host 2 never died"; }
t0=$(nl_now_ms)
nl_wait_pid $sb 120
echo "failover $(($(nl_now_ms) - t0)) $nl_pid_rc" >>"$COLO_OUT/timings"
cat "$me/standby.log"
[ "$nl_pid_rc" = 0 ] || nl_fail "the standby exited with $nl_pid_rc"
grep -q "now runs here after failover" "$me/standby.log" || nl_fail "no failover"
[ -n "$(nl_domid tick)" ] || nl_fail "no domain tick on host 1 after the failover"
last2=$(cat "$peer/last-tick")
nl_wait_ticks tick $((last2 + 3)) 60 || nl_fail "the guest does not tick on after the failover"
nl_check_ticks tick 0 || nl_fail "ticks after the failover not continuous"
echo "ok: host 2's last tick $last2, host 1 now at $(nl_ticks_max tick)"
xl destroy tick
{
    echo "# colo across two nested hosts, pvh tick guest, 128 MiB (ms, status)"
    cat "$COLO_OUT/timings" /share/host2/timings 2>/dev/null
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: colo migrate 1 -> 2, protect 2 -> 1, failover to 1"

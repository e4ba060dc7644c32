# nested.two_hosts: `xl migrate` of a PVH tick guest from host 1 to host 2
# over the socket netdev between them (receiver: socat listening, running
# `xl migrate-receive`; busybox nc works too but moved the stream 2x
# slower). Host 2 checks the guest goes on counting from where it stopped
# on host 1. The hosts meet through files in /share.
. "$NESTED_LIB"
port=5555
me=/share/host$COLO_HOST_ID
peer=/share/host$((3 - COLO_HOST_ID))
ip addr show eth0
if [ "$COLO_HOST_ID" = 2 ]; then
    nl_wait_peer "$peer/net-up" 240 || nl_fail "host 1 never came up"
    ping -c 2 -W 5 "$COLO_PEER_IP" || nl_fail "no ping to host 1"
    socat TCP-LISTEN:$port,reuseaddr EXEC:"xl migrate-receive" >"$me/receive.log" 2>&1 &
    rx_pid=$!
    usleep 500000
    kill -0 $rx_pid || nl_fail "socat died: $(cat "$me/receive.log")"
    touch "$me/listening"
    nl_wait_peer "$peer/migrated" 300 || nl_fail "host 1 did not migrate"
    wait $rx_pid
    cat "$me/receive.log"
    [ -n "$(nl_domid tick)" ] || nl_fail "no domain tick on host 2"
    last1=$(cat "$peer/last-tick")
    nl_wait_ticks tick $((last1 + 1)) 60 || nl_fail "the guest does not tick on host 2"
    first2=$(nl_ticks_min tick)
    echo "host 1 last tick $last1, host 2 first tick $first2"
    [ "$first2" -gt "$last1" ] || nl_fail "ticks on host 2 do not continue host 1's"
    nl_wait_ticks tick $((first2 + 3)) 60 || nl_fail "the guest does not tick on host 2"
    nl_check_ticks tick 0 || nl_fail "ticks on host 2 not continuous"
    echo "ok: host 2 ticks $first2 -> $(nl_ticks_max tick)"
    xl destroy tick
    touch "$me/done"
    exit 0
fi

# Host 1: the sender.
touch "$me/net-up"
nl_start_tick tick pvh
nl_wait_peer "$peer/listening" 300 || nl_fail "host 2 does not listen"
nl_time migrate_remote xl migrate -s "" tick "socat - TCP:$COLO_PEER_IP:$port"
rc=$?
nl_ticks_max tick >"$me/last-tick"
touch "$me/migrated"
[ $rc = 0 ] || nl_fail "xl migrate to host 2 failed ($rc)"
[ -z "$(nl_domid tick)" ] || nl_fail "tick still on host 1 after migrate"
nl_check_ticks tick || nl_fail "ticks on host 1 not continuous"
nl_wait_peer "$peer/done" 180 || nl_fail "host 2 did not finish"
{
    echo "# xl across two nested hosts, pvh tick guest, 128 MiB (ms, status)"
    cat "$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: migrated to host 2, last tick here $(cat "$me/last-tick")"

# run.sh of bench-nested (bench/nested/bench-nested): in dom0 of a nested
# Xen host, time colo and xl on the same PVH tick guest, alternating,
# BENCH_ROUNDS times each. Timings go to $COLO_OUT/timings
# ("op ms status"), a table to $COLO_OUT/results.
. "$NESTED_LIB"
rounds=${BENCH_ROUNDS:-3}
nl_tick_cfg tick pvh >/tmp/tick.cfg
xl create /tmp/tick.cfg || nl_fail "xl create"
nl_wait_ticks tick 3 120 || nl_fail "the tick guest does not tick"
printf 'colo-nested-bench-key-0123456789' >/tmp/key && chmod 600 /tmp/key
$COLO standby --listen 127.0.0.1:8794 --key-file /tmp/key >/tmp/standby.log 2>&1 &
sb=$!

# remus20: seconds to the 20th checkpoint at a 200 ms interval; colo's is
# its 20th acknowledged one, xl's its 20th suspend request (xl -vvv).
remus20() {
    local t0 end n p
    t0=$(nl_now_ms)
    if [ "$1" = colo ]; then
        $COLO protect tick 127.0.0.1:8794 --key-file /tmp/key --interval 200 \
            --count 20 >/tmp/p.log 2>&1
        p=$?
        echo "colo_remus_20 $(($(nl_now_ms) - t0)) $p" >>"$COLO_OUT/timings"
        return $p
    fi
    t0=$(nl_xl_remus tick 20 200)
    echo "xl_remus_20 $t0 $?" >>"$COLO_OUT/timings"
}

i=0
echo 0 >"$COLO_OUT/rounds_ok" # bench-nested's JSON: rounds that completed
while [ $i -lt "$rounds" ]; do
    nl_time colo_save $COLO save tick /tmp/c.save || nl_fail "colo save"
    nl_time xl_restore xl restore /tmp/c.save || nl_fail "xl restore"
    rm -f /tmp/c.save
    nl_time xl_save xl save tick /tmp/x.save || nl_fail "xl save"
    nl_time colo_restore $COLO restore /tmp/x.save || nl_fail "colo restore"
    rm -f /tmp/x.save
    $COLO receive --listen 127.0.0.1:8793 --key-file /tmp/key >/tmp/recv.log 2>&1 &
    rv=$!
    end=$(($(nl_now_ms) + 60000))
    until grep -q "waiting for a primary" /tmp/recv.log 2>/dev/null; do
        [ "$(nl_now_ms)" -lt $end ] || nl_fail "colo receive did not start"
        usleep 100000
    done
    nl_time colo_migrate $COLO migrate tick 127.0.0.1:8793 --key-file /tmp/key ||
        nl_fail "colo migrate"
    wait $rv
    nl_time xl_migrate xl migrate -s "" tick "xl migrate-receive" ||
        nl_fail "xl migrate"
    remus20 colo || nl_fail "colo protect"
    end=$(($(nl_now_ms) + 60000))
    until [ "$(grep -c 'waiting for a primary' /tmp/standby.log)" -ge $((i + 2)) ]; do
        [ "$(nl_now_ms)" -lt $end ] || nl_fail "the standby did not come back"
        usleep 100000
    done
    i=$((i + 1))
    echo "$i" >"$COLO_OUT/rounds_ok"
done
kill $sb
# xl remus last: it cannot be stopped cleanly, so the guest goes with it.
remus20 xl
# (The guest's continuity is the nested.* tests' job.)
{
    echo "# bench-nested: colo vs xl, PVH tick guest, 128 MiB, $rounds rounds (ms)"
    printf '%-16s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-16s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"

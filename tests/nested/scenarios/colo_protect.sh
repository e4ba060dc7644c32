# nested.colo_protect: Remus protection of a running PVH tick guest by colo,
# primary and standby in the same dom0 (the standby's copy is
# "tick--incoming" until it takes over):
#   1. protect --count 15: a clean end; the standby discards its copy and
#      waits again; exactly one tick domain, ticking on.
#   2. protect for 50 checkpoints, then the primary "host" dies: colo and its
#      helper are killed with SIGKILL; the standby's tie-breaker
#      (--fence-cmd) destroys the primary's domain (STONITH), and the standby
#      resumes the guest from the last committed checkpoint under the
#      guest's own name. Its ticks go on.
#   3. the baseline: xl remus of the same guest at the same interval, timed
#      to its 20th checkpoint (libxl's 20th suspend request) like colo's
#      (its 20th acknowledged checkpoint); recorded, not asserted.
. "$NESTED_LIB"
[ -n "${COLO:-}" ] || nl_fail "no \$COLO (nested-run --colo)"
type=${NESTED_TICK_TYPE:-pvh}
nl_tick_cfg tick "$type" >/tmp/tick.cfg
nl_time create xl create /tmp/tick.cfg || nl_fail "xl create"
nl_wait_ticks tick 3 120 || nl_fail "the tick guest does not tick"
printf 'colo-nested-test-key-0123456789' >/tmp/key

# wait_log FILE TEXT SECONDS [PID]: until FILE has TEXT (status 1 at the
# deadline or when PID died).
wait_log() {
    end=$(($(nl_now_ms) + $3 * 1000))
    until grep -q "$2" "$1" 2>/dev/null; do
        [ "$(nl_now_ms)" -lt $end ] || { echo "no '$2' in $1 after $3 s"; return 1; }
        if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
            echo "process $4 ended before '$2' appeared in $1"
            return 1
        fi
        usleep 200000
    done
}

# wait_pid PID SECONDS: its exit status in $pid_rc (124 at the deadline).
wait_pid() {
    end=$(($(nl_now_ms) + $2 * 1000))
    while kill -0 $1 2>/dev/null; do
        if [ "$(nl_now_ms)" -ge $end ]; then
            kill -9 $1
            wait $1
            pid_rc=124
            return
        fi
        usleep 200000
    done
    wait $1
    pid_rc=$?
}

# kill_tree PID: SIGKILL PID and its children (colo and its libxc helper).
kill_tree() {
    for p in /proc/[0-9]*; do
        [ "$(awk '{ print $4 }' $p/stat 2>/dev/null)" = "$1" ] &&
            kill -9 "${p#/proc/}" 2>/dev/null
    done
    kill -9 "$1" 2>/dev/null
}

$COLO standby --listen 127.0.0.1:8792 --key-file /tmp/key \
    --fence-cmd "xl destroy tick" >/tmp/standby.log 2>&1 &
sb=$!
wait_log /tmp/standby.log "waiting for a primary" 60 $sb || { cat /tmp/standby.log; nl_fail "standby"; }

# 1. a clean end
before=$(nl_ticks_max tick)
id=$(nl_domid tick)
nl_time protect_15 $COLO protect tick 127.0.0.1:8792 --key-file /tmp/key --count 15 ||
    { cat /tmp/standby.log; nl_fail "colo protect --count 15"; }
wait_log /tmp/standby.log "waiting for a primary again" 60 $sb ||
    { cat /tmp/standby.log; nl_fail "the standby did not discard its copy"; }
xl list
[ "$(nl_domid tick)" = "$id" ] || nl_fail "tick changed domain after a clean end"
[ "$(xl list | grep -c '^tick')" = 1 ] || nl_fail "not exactly one tick domain after a clean end"
nl_assert_continues tick "$before" 60

# 2. 50 checkpoints, then the primary dies
t0=$(nl_now_ms)
$COLO protect tick 127.0.0.1:8792 --key-file /tmp/key --interval 200 >/tmp/protect.log 2>&1 &
pr=$!
wait_log /tmp/protect.log "checkpoint 20 acked" 600 $pr ||
    { cat /tmp/protect.log /tmp/standby.log; nl_fail "20 checkpoints"; }
echo "colo_remus_20 $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
wait_log /tmp/protect.log "checkpoint 50 acked" 600 $pr ||
    { cat /tmp/protect.log /tmp/standby.log; nl_fail "50 checkpoints"; }
t1=$(nl_now_ms)
echo "protect_50 $((t1 - t0)) 0" >>"$COLO_OUT/timings"
cat /tmp/protect.log
before=$(nl_ticks_max tick)
kill_tree $pr
wait $pr 2>/dev/null
t2=$(nl_now_ms)
wait_pid $sb 120
t3=$(nl_now_ms)
echo "failover $((t3 - t2)) $pid_rc" >>"$COLO_OUT/timings"
cat /tmp/standby.log
[ "$pid_rc" = 0 ] || nl_fail "the standby exited with $pid_rc"
grep -q "now runs here after failover" /tmp/standby.log || nl_fail "no failover message"
xl list
[ -n "$(nl_domid tick)" ] || nl_fail "no domain tick after the failover"
[ "$(xl list | grep -c '^tick')" = 1 ] || nl_fail "not exactly one tick domain after the failover"
nl_assert_continues tick "$before" 60

# 3. xl remus, the baseline (on the domain colo's standby now runs)
t0=$(nl_now_ms)
xl -vvv remus -F -n -s "" -i 200 tick "xl migrate-receive -r" >/tmp/remus.log 2>&1 &
xr=$!
end=$(($(nl_now_ms) + 300000))
n=0
while [ "$n" -lt 20 ] && [ "$(nl_now_ms)" -lt $end ] && kill -0 $xr 2>/dev/null; do
    usleep 200000
    n=$(grep -c "issuing .* suspend request" /tmp/remus.log)
    n=${n:-0}
done
echo "xl_remus_20 $(($(nl_now_ms) - t0)) $([ "$n" -ge 20 ] && echo 0 || echo 1)" \
    >>"$COLO_OUT/timings"
echo "xl remus: $n checkpoints"
kill_tree $xr
xl destroy tick--incoming 2>/dev/null
xl destroy tick

{
    echo "# colo protect (Remus), local, $type tick guest (ms, status)"
    printf '%-24s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-24s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: colo protect: clean end, 50 checkpoints, failover after SIGKILL"

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
nl_need_colo
type=${NESTED_TICK_TYPE:-pvh}
nl_start_tick tick "$type"
printf 'colo-nested-test-key-0123456789' >/tmp/key && chmod 600 /tmp/key

nl_start_standby 8792

# 1. a clean end
before=$(nl_ticks_max tick)
id=$(nl_domid tick)
nl_time protect_15 $COLO protect tick 127.0.0.1:8792 --key-file /tmp/key --count 15 ||
    { cat /tmp/standby.log; nl_fail "colo protect --count 15"; }
nl_wait_log /tmp/standby.log "waiting for a primary again" 60 $sb ||
    { cat /tmp/standby.log; nl_fail "the standby did not discard its copy"; }
xl list
[ "$(nl_domid tick)" = "$id" ] || nl_fail "tick changed domain after a clean end"
[ "$(xl list | grep -c '^tick')" = 1 ] || nl_fail "not exactly one tick domain after a clean end"
nl_assert_continues tick "$before" 60

# 2. 50 checkpoints, then the primary dies
t0=$(nl_now_ms)
$COLO protect tick 127.0.0.1:8792 --key-file /tmp/key --interval 200 >/tmp/protect.log 2>&1 &
pr=$!
nl_wait_log /tmp/protect.log "checkpoint 20 acked" 600 $pr ||
    { cat /tmp/protect.log /tmp/standby.log; nl_fail "20 checkpoints"; }
echo "colo_remus_20 $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
nl_wait_log /tmp/protect.log "checkpoint 50 acked" 600 $pr ||
    { cat /tmp/protect.log /tmp/standby.log; nl_fail "50 checkpoints"; }
t1=$(nl_now_ms)
echo "protect_50 $((t1 - t0)) 0" >>"$COLO_OUT/timings"
cat /tmp/protect.log
before=$(nl_ticks_max tick)
nl_kill_primary_failover $pr $sb /tmp/standby.log
nl_assert_continues tick "$before" 60

# 3. xl remus, the baseline (on the domain colo's standby now runs)
ms=$(nl_xl_remus tick 20 200)
rc=$?
echo "xl_remus_20 $ms $rc" >>"$COLO_OUT/timings"
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

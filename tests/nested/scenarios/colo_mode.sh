# nested.colo_mode: COLO protection of a running PVH tick guest by colo, on
# libxenguest's COLO stream (Debian's libxl has no COLO; colo drives
# xc_domain_save/restore itself, libxl_colo_save.c's protocol). Primary and
# standby in the same dom0; the standby's copy "tick--incoming" RUNS between
# checkpoints and is reset to the primary's state at each one.
#   1. protect --mode colo --count 10: a clean end; the standby destroys its
#      running copy and waits again; exactly one tick domain, ticking on.
#   2. protect --mode colo for 30 checkpoints: the standby's copy prints
#      ticks of its own while protected (it runs); then the primary "host"
#      dies (colo and its helper SIGKILLed; the standby's --fence-cmd
#      destroys the primary's domain) and the standby's copy goes on under
#      the guest's own name, past the primary's last tick. While the copy
#      runs, it and the primary page the same way (Xen's domain dump):
#      shadow with NESTED_TICK_HAP=0, else hap.
# ctest runs it with NESTED_TICK_HAP=0 on the shadow-paging hypervisor:
# with HAP, two running guests trip QEMU TCG's emulated NPT now and then
# (docs/nested.md, "Two running guests").
# The primary's console must never go back; the copy's console does go
# back at each checkpoint (it is reset to the primary's state), so it is
# checked for running, not for monotony.
. "$NESTED_LIB"
nl_need_colo
type=${NESTED_TICK_TYPE:-pvh}
nl_start_tick tick "$type"
printf 'colo-nested-test-key-0123456789' >/tmp/key && chmod 600 /tmp/key
plog=$NL_CONSOLE_DIR/guest-tick.log
slog=$NL_CONSOLE_DIR/guest-tick--incoming.log

nl_start_standby 8793

# 1. a clean end
before=$(nl_ticks_max tick)
id=$(nl_domid tick)
# On a failure: what Xen and xenstore say about the copy.
colo_diag() {
    cat /tmp/standby.log
    xl list
    sleep 2
    xl list
    xl dmesg | tail -40
    sid=$(nl_domid tick--incoming)
    [ -n "$sid" ] && xenstore-ls -f "/local/domain/$sid" | head -40
}
nl_time colo_10 $COLO protect tick 127.0.0.1:8793 --key-file /tmp/key \
    --mode colo --count 10 ||
    { colo_diag; nl_fail "colo protect --mode colo --count 10"; }
nl_wait_log /tmp/standby.log "waiting for a primary again" 60 $sb ||
    { cat /tmp/standby.log; nl_fail "the standby did not discard its copy"; }
cat /tmp/standby.log
xl list
[ "$(nl_domid tick)" = "$id" ] || nl_fail "tick changed domain after a clean end"
[ "$(xl list | grep -c '^tick')" = 1 ] || nl_fail "not exactly one tick domain after a clean end"
# The copy's console is checked in part 2; set this one aside.
[ -f "$slog" ] && mv "$slog" /tmp/secondary-1.log
nl_assert_continues tick "$before" 60

# 2. 30 checkpoints, the copy runs; then the primary dies
t0=$(nl_now_ms)
$COLO protect tick 127.0.0.1:8793 --key-file /tmp/key --mode colo \
    --interval 200 >/tmp/protect.log 2>&1 &
pr=$!
nl_wait_log /tmp/protect.log "checkpoint 20 acked" 600 $pr ||
    { cat /tmp/protect.log /tmp/standby.log; nl_fail "20 checkpoints"; }
echo "colo_colo_20 $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
# colo made the copy the way the primary's configuration says: hardware
# paging, or shadow paging with NESTED_TICK_HAP=0.
want=hap
[ "${NESTED_TICK_HAP:-1}" = 0 ] && want=shadow
for g in tick tick--incoming; do
    m=$(nl_paging "$g")
    echo "$g: $m paging"
    [ "$m" = "$want" ] || nl_fail "$g has $m paging, not $want"
done
nl_wait_log /tmp/protect.log "checkpoint 30 acked" 600 $pr ||
    { cat /tmp/protect.log /tmp/standby.log; nl_fail "30 checkpoints"; }
echo "protect_colo_30 $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
xl list
s_ticks=$(nl_ticks_in "$slog")
echo "the copy's console: highest tick $s_ticks"
[ "$s_ticks" -gt 0 ] || nl_fail "the standby's copy never ran (no tick in $slog)"
cat /tmp/protect.log
before=$(nl_ticks_in "$plog")
nl_kill_primary_failover $pr $sb /tmp/standby.log
# The primary's own console never went back.
nl_ticks_increase "$plog" || nl_fail "the primary's ticks went back"
# The copy goes on past the primary's last tick.
end=$(($(nl_now_ms) + 60000))
while [ "$(nl_ticks_in "$slog")" -lt $((before + 3)) ]; do
    [ "$(nl_now_ms)" -lt $end ] ||
        nl_fail "the copy does not tick past $before (at $(nl_ticks_in "$slog"))"
    usleep 200000
done
echo "ok: tick continues on the former standby: tick $before -> $(nl_ticks_in "$slog")"
xl destroy tick

{
    echo "# colo protect --mode colo, local, $type tick guest (ms, status)"
    printf '%-24s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-24s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: colo protect --mode colo: clean end, the copy runs, failover after SIGKILL"

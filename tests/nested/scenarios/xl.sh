# nested.xl: the baseline with Xen's own toolstack on one host. A PVH tick
# guest is created, saved, restored and migrated within dom0; its ticks
# must go on after each operation. Timings go to $COLO_OUT/timings and a
# table to $COLO_OUT/results. The save file is left in $COLO_OUT for the
# host-side check (verify-stream-v2, scenarios/xl.check).
. "$NESTED_LIB"
type=${NESTED_TICK_TYPE:-pvh}
nl_tick_cfg tick "$type" >/tmp/tick.cfg
cat /tmp/tick.cfg
nl_time create xl create /tmp/tick.cfg || nl_fail "xl create"
nl_wait_ticks tick 3 120 || nl_fail "the tick guest does not tick"
nl_check_ticks tick || nl_fail "ticks"

before=$(nl_ticks_max tick)
nl_time save xl save tick /tmp/tick.save || nl_fail "xl save"
[ -z "$(nl_domid tick)" ] || nl_fail "tick still runs after xl save"
ls -l /tmp/tick.save
nl_time copy_to_share cp /tmp/tick.save "$COLO_OUT/tick.save" ||
    nl_fail "copy the save file to the share"
nl_time restore xl restore /tmp/tick.save || nl_fail "xl restore"
rm -f /tmp/tick.save
nl_assert_continues tick "$before" 60

before=$(nl_ticks_max tick)
nl_time migrate_local xl migrate -s "" tick "xl migrate-receive" ||
    nl_fail "xl migrate (local)"
[ -n "$(nl_domid tick)" ] || nl_fail "no domain tick after xl migrate"
nl_assert_continues tick "$before" 60
xl list
nl_time destroy xl destroy tick || nl_fail "xl destroy"

{
    echo "# xl baseline, $type tick guest, 128 MiB (ms, status)"
    printf '%-16s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-16s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: xl create/save/restore/migrate, ticks continuous"

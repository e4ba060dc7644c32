# nested.xl: the baseline with Xen's own toolstack on one host. A PVH tick
# guest is created, saved, restored and migrated within dom0; its ticks
# must go on after each operation. Then a PV tick guest is saved and
# restored (Debian's hypervisor has no shadow paging, so PV guests cannot
# migrate live). Timings go to $COLO_OUT/timings and a table to
# $COLO_OUT/results. The PVH save file is left in $COLO_OUT for the
# host-side check (verify-stream-v2, scenarios/xl.check).
. "$NESTED_LIB"

nl_tick_cfg tick pvh >/tmp/tick.cfg
cat /tmp/tick.cfg
nl_time pvh_create xl create /tmp/tick.cfg || nl_fail "xl create"
nl_wait_ticks tick 3 120 || nl_fail "the tick guest does not tick"
nl_check_ticks tick || nl_fail "ticks"

before=$(nl_ticks_max tick)
nl_time pvh_save xl save tick /tmp/tick.save || nl_fail "xl save"
[ -z "$(nl_domid tick)" ] || nl_fail "tick still runs after xl save"
ls -l /tmp/tick.save
nl_time pvh_copy_to_share cp /tmp/tick.save "$COLO_OUT/tick.save" ||
    nl_fail "copy the save file to the share"
nl_time pvh_restore xl restore /tmp/tick.save || nl_fail "xl restore"
rm -f /tmp/tick.save
nl_assert_continues tick "$before" 60

before=$(nl_ticks_max tick)
nl_time pvh_migrate_local xl migrate -s "" tick "xl migrate-receive" ||
    nl_fail "xl migrate (local)"
[ -n "$(nl_domid tick)" ] || nl_fail "no domain tick after xl migrate"
nl_assert_continues tick "$before" 60
xl list
nl_time pvh_destroy xl destroy tick || nl_fail "xl destroy"

nl_tick_cfg tickpv pv >/tmp/tickpv.cfg
nl_time pv_create xl create /tmp/tickpv.cfg || nl_fail "xl create (PV)"
nl_wait_ticks tickpv 3 120 || nl_fail "the PV tick guest does not tick"
before=$(nl_ticks_max tickpv)
nl_time pv_save xl save tickpv /tmp/tickpv.save || nl_fail "xl save (PV)"
[ -z "$(nl_domid tickpv)" ] || nl_fail "tickpv still runs after xl save"
nl_time pv_restore xl restore /tmp/tickpv.save || nl_fail "xl restore (PV)"
rm -f /tmp/tickpv.save
nl_assert_continues tickpv "$before" 60
nl_time pv_destroy xl destroy tickpv || nl_fail "xl destroy (PV)"

{
    echo "# xl baseline on one nested host, 128 MiB tick guests"
    printf '%-20s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-20s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: xl create/save/restore/migrate (PVH), save/restore (PV), ticks continuous"

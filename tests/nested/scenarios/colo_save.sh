# nested.colo_save: colo's Xen save/restore on a running PVH tick guest
# (NESTED_TICK_TYPE=pv or hvm: the same steps with a PV or HVM guest),
# and interoperability with Xen's own toolstack in both directions:
#   colo save  -> xl restore      (xl reads colo's file)
#   xl save    -> colo restore    (colo reads xl's file)
#   colo save  -> colo restore
#   colo save --continue          (the guest runs on in place)
#   colo restore of a truncated file fails, no domain left behind
# The ticks must go on after each step, never going back. colo's save file
# is left in $COLO_OUT for the host-side check (verify-stream-v2).
. "$NESTED_LIB"
nl_need_colo
type=${NESTED_TICK_TYPE:-pvh}
# HVM: exactly one device model (QEMU) runs, the live domain's; none is
# left behind by a save, a failed restore or a destroyed domain.
dm_check() {
    [ "$type" != hvm ] || nl_check_dms "$@"
}
nl_start_tick tick "$type"

# 1. colo save -> xl restore
before=$(nl_ticks_max tick)
nl_time colo_save $COLO save tick /tmp/colo.save || nl_fail "colo save"
[ -z "$(nl_domid tick)" ] || nl_fail "tick still runs after colo save"
ls -l /tmp/colo.save
$COLO verify-stream /tmp/colo.save || nl_fail "colo verify-stream rejects colo's save file"
cp /tmp/colo.save "$COLO_OUT/colo.save" || nl_fail "copy to the share"
nl_time xl_restore_colo_file xl restore /tmp/colo.save ||
    nl_fail "xl restore of the file colo save wrote"
rm -f /tmp/colo.save # dom0's /tmp is RAM
nl_assert_continues tick "$before" 60
dm_check 1 "after xl restore of colo's file"

# 2. xl save -> colo restore
before=$(nl_ticks_max tick)
nl_time xl_save xl save tick /tmp/xl.save || nl_fail "xl save"
nl_time colo_restore_xl_file $COLO restore /tmp/xl.save ||
    nl_fail "colo restore of the file xl save wrote"
rm -f /tmp/xl.save
xl list
[ -n "$(nl_domid tick)" ] || nl_fail "no domain tick after colo restore"
nl_assert_continues tick "$before" 60
dm_check 1 "after colo restore of xl's file"

# 3. colo save -> colo restore (of a domain colo restored: its config
#    came from colo's own userdata record)
before=$(nl_ticks_max tick)
nl_time colo_save2 $COLO save tick /tmp/colo2.save || nl_fail "colo save (2)"
nl_time colo_restore $COLO restore /tmp/colo2.save || nl_fail "colo restore"
rm -f /tmp/colo2.save
nl_assert_continues tick "$before" 60
dm_check 1 "after colo save and colo restore"

# 4. colo save --continue: the guest runs on where it was. A PV guest on
#    Debian's hypervisor (no shadow paging, DESIGN 4b) cannot log-dirty:
#    then the save must fail cleanly, leave no file and the guest running.
before=$(nl_ticks_max tick)
id=$(nl_domid tick)
if [ "$type" = pv ]; then
    t0=$(nl_now_ms)
    $COLO save tick /tmp/colo3.save --continue >/tmp/continue.log 2>&1
    rc=$?
    echo "colo_save_continue $(($(nl_now_ms) - t0)) $rc" >>"$COLO_OUT/timings"
    cat /tmp/continue.log
    if [ $rc -ne 0 ]; then
        grep -q "logdirty" /tmp/continue.log ||
            nl_fail "save --continue of a PV guest failed for another reason"
        [ ! -e /tmp/colo3.save ] || nl_fail "a failed save left its file"
        ls /tmp/colo3.save.colo-* 2>/dev/null && nl_fail "a failed save left a temporary file"
    fi
else
    nl_time colo_save_continue $COLO save tick /tmp/colo3.save --continue ||
        nl_fail "colo save --continue"
fi
[ "$(nl_domid tick)" = "$id" ] || nl_fail "save --continue changed the domain"
nl_assert_continues tick "$before" 60
dm_check 1 "after save --continue"

# 5. a truncated file: a clear error, nothing left behind
if [ -e /tmp/colo3.save ]; then
    xl destroy tick || nl_fail "xl destroy"
else
    nl_time colo_save3 $COLO save tick /tmp/colo3.save || nl_fail "colo save (3)"
fi
n_before=$(xl list | wc -l)
size=$(stat -c %s /tmp/colo3.save)
head -c $((size / 2)) /tmp/colo3.save >/tmp/cut.save
rm -f /tmp/colo3.save
$COLO restore /tmp/cut.save
rc=$?
[ $rc -ne 0 ] || nl_fail "colo restore accepted a corrupt file"
echo "corrupt file: exit $rc"
[ -z "$(nl_domid tick)" ] || nl_fail "a half-restored domain was left behind"
xl list
[ "$(xl list | wc -l)" -eq "$n_before" ] || nl_fail "domains left behind"
dm_check 0 "after a failed restore"

{
    echo "# colo vs xl, $type tick guest, 128 MiB (ms, status)"
    printf '%-24s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-24s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: colo save/restore with xl interop, ticks continuous"

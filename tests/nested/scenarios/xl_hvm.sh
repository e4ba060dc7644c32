# nested.xl_hvm: an HVM tick guest with Xen's own toolstack on one host.
# The same tick kernel and initramfs boot through QEMU's direct kernel boot
# (qemu-system-xen as the device model, hvmloader, SeaBIOS); the ticks go
# to the Xen PV console hvc0, which xenconsoled logs. The guest is created,
# saved, restored and migrated within dom0 (xl migrate, as nested.xl does
# it); its ticks must go on after each operation. What colo's HVM support
# needs to know is recorded in $COLO_OUT/facts/: the device model's command
# line after create, restore and migrate, the xenstore nodes, xl's JSON
# config, the QMP sockets, libxl's debug logs of create, save, restore and
# migrate (with its QMP commands to QEMU) and the records of the xl save
# file (with $COLO: colo verify-stream of it too). Timings go to
# $COLO_OUT/timings and a table to $COLO_OUT/results. NESTED_KEEP_SAVE=1
# keeps the save file (~140 MB) in $COLO_OUT.
. "$NESTED_LIB"

facts=$COLO_OUT/facts
mkdir -p "$facts"
# Whatever happens: the toolstack's and QEMU's logs, Xen's log.
trap 'mkdir -p "$COLO_OUT/xen-logs"; cp /var/log/xen/*.log "$COLO_OUT/xen-logs/" 2>/dev/null
      xl dmesg >"$COLO_OUT/xen-logs/xl-dmesg.txt" 2>&1' EXIT

# record STEP: the device model and xenstore as they are now.
record() {
    local d
    d=$(nl_domid tick)
    echo "domid $d, device model pid $(nl_dm_pid tick)" >"$facts/$1-domid.txt"
    nl_dm_cmdline tick >"$facts/$1-dm-cmdline.txt" 2>&1
    echo "$1: $(cat "$facts/$1-dm-cmdline.txt")"
    xenstore-ls -f /local/domain/0/device-model >"$facts/$1-xs-device-model.txt" 2>&1
    xenstore-ls -f "/local/domain/$d" >"$facts/$1-xs-domain.txt" 2>&1
    xenstore-ls -f /local/domain/0/backend >"$facts/$1-xs-backend.txt" 2>&1
    xenstore-ls -f "/libxl/$d" >"$facts/$1-xs-libxl.txt" 2>&1
    xenstore-ls -f "$(xenstore-read "/local/domain/$d/vm")" \
        >"$facts/$1-xs-vm.txt" 2>&1
    ls -l /var/run/xen/ >"$facts/$1-var-run-xen.txt" 2>&1
    ls -l /var/lib/xen/ >"$facts/$1-var-lib-xen.txt" 2>&1
    ls -l "/proc/$(nl_dm_pid tick)/fd/" >"$facts/$1-dm-fds.txt" 2>&1
}

# qmp_summary LOG: the QMP commands libxl sent (its -vvv log names them,
# without their arguments), in order, on one line.
qmp_summary() {
    grep -o "cmd '[a-z_-]*'" "$1" | sed "s/cmd '\(.*\)'/\1/" | tr '\n' ' '
    echo
}
nl_tick_cfg tick hvm >/tmp/tick.cfg
cat /tmp/tick.cfg
t0=$(nl_now_ms)
# xl -vvv: libxl's debug log has the device model's arguments and every
# QMP command libxl sends to QEMU.
nl_time hvm_create xl -vvv create /tmp/tick.cfg >"$facts/xl-create.log" 2>&1 ||
    { tail -20 "$facts/xl-create.log"; nl_fail "xl create"; }
record create
xl list -l tick >"$facts/xl-list-l.json" 2>&1
# SeaBIOS, the kernel and its initramfs under nested TCG: a minute or more.
nl_wait_ticks tick 1 600 || nl_fail "the HVM tick guest does not tick"
echo "hvm_boot_to_tick1 $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
nl_wait_ticks tick 3 120 || nl_fail "the HVM tick guest stops after tick 1"
nl_check_ticks tick || nl_fail "ticks"
echo "ok: HVM guest ticks, $(($(nl_now_ms) - t0)) ms after xl create"

before=$(nl_ticks_max tick)
nl_time hvm_save xl -vvv save tick /tmp/tick.save >"$facts/xl-save.log" 2>&1 ||
    { tail -20 "$facts/xl-save.log"; nl_fail "xl save"; }
[ -z "$(nl_domid tick)" ] || nl_fail "tick still runs after xl save"
ls -l /tmp/tick.save | tee "$facts/save-file.txt"
nl_save_records /tmp/tick.save >"$facts/save-records.txt" 2>&1 ||
    nl_fail "xl's save file: $(tail -1 "$facts/save-records.txt")"
grep -E 'header|EMULATOR|HVM|END|CONTEXT' "$facts/save-records.txt"
if [ -n "${COLO:-}" ]; then
    "$COLO" verify-stream /tmp/tick.save >"$facts/colo-verify-stream.txt" 2>&1
    echo "colo verify-stream: status $? ($(head -1 "$facts/colo-verify-stream.txt"))"
fi
if [ "${NESTED_KEEP_SAVE:-0}" = 1 ]; then
    nl_time hvm_copy_to_share cp /tmp/tick.save "$COLO_OUT/tick.save" ||
        nl_fail "copy the save file to the share"
fi
nl_time hvm_restore xl -vvv restore /tmp/tick.save >"$facts/xl-restore.log" 2>&1 ||
    { tail -20 "$facts/xl-restore.log"; nl_fail "xl restore"; }
rm -f /tmp/tick.save
record restore
for l in create save restore; do
    echo "QMP commands of xl $l: $(qmp_summary "$facts/xl-$l.log")"
done
nl_assert_continues tick "$before" 180

before=$(nl_ticks_max tick)
nl_time hvm_migrate_local xl -vvv migrate -s "" tick "xl migrate-receive" \
    >"$facts/xl-migrate.log" 2>&1 ||
    { tail -20 "$facts/xl-migrate.log"; nl_fail "xl migrate (local)"; }
[ -n "$(nl_domid tick)" ] || nl_fail "no domain tick after xl migrate"
record migrate
echo "QMP commands of xl migrate (sender): $(qmp_summary "$facts/xl-migrate.log")"
nl_assert_continues tick "$before" 180
xl list
nl_time hvm_destroy xl destroy tick || nl_fail "xl destroy"

{
    echo "# xl on one nested host, 128 MiB HVM tick guest"
    printf '%-20s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-20s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: xl create/save/restore/migrate (HVM), ticks continuous"

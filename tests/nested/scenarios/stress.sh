# stress (by hand, not in ctest): measures the TCG flakiness of dom0
# (docs/nested.md, "Known flakiness"). A PVH tick guest runs while dom0
# loops over work that crashed before (xl list | grep, xl info, busybox
# pipelines) for NESTED_STRESS_SECONDS (default 90) while the guest is
# moved all the time (local xl migrate, xl save + xl restore).
# Every crash is counted: a command ending on a signal (status > 128),
# "segfault" / "general protection" / "invalid opcode" lines in dom0's
# kernel log, a failed xl migrate/save/restore, and the guest's ticks
# (continuous, no crash in its console). Last line:
#   stress: N crashes in M commands, ticks ok|broken
# Exit status 0 either way (the numbers are the result), 1 if the guest
# could not even be started.
. "$NESTED_LIB"

secs=${NESTED_STRESS_SECONDS:-90}
dmesg -c >/dev/null 2>&1
nl_tick_cfg tick pvh >tick.cfg
t0=$(nl_now_ms)
nl_time create xl create tick.cfg || nl_fail "xl create failed"
nl_wait_ticks tick 1 240 || nl_fail "no first tick"
echo "first_tick $(($(nl_now_ms) - t0)) 0" >>"$COLO_OUT/timings"
echo "timing: create to first tick $(($(nl_now_ms) - t0)) ms"

cmds=0 sig=0 fails=0
# run LABEL CMD...: one counted command; a signal death is a crash.
run() {
    local label=$1 rc
    shift
    "$@" >/dev/null 2>&1
    rc=$?
    cmds=$((cmds + 1))
    if [ $rc -gt 128 ]; then
        sig=$((sig + 1))
        echo "crash: $label status $rc"
    fi
    return $rc
}

end=$(($(nl_now_ms) + secs * 1000))
# Background: the guest moves all the time (local xl migrate; every third
# round xl save + xl restore instead), which is what crashed dom0 most.
(
    j=0 bad=0 cmd=0
    while [ "$(nl_now_ms)" -lt $end ]; do
        j=$((j + 1))
        if [ $((j % 3)) -eq 0 ]; then
            cmd=$((cmd + 2))
            xl save tick /tmp/tick.save >/dev/null 2>&1 &&
                xl restore /tmp/tick.save >/dev/null 2>&1 ||
                { bad=$((bad + 1)); echo "crash: xl save/restore failed (round $j)"; }
            rm -f /tmp/tick.save
        else
            cmd=$((cmd + 1))
            xl migrate -s "" tick "xl migrate-receive" >mig.log 2>&1 ||
                { bad=$((bad + 1)); echo "crash: xl migrate failed (round $j)"; tail -3 mig.log; }
        fi
        # a failed operation may leave no guest: stop moving it then
        xl domid tick >/dev/null 2>&1 || { echo "no guest after round $j"; break; }
    done
    echo "$j $bad $cmd" >mover.txt
) &
mover=$!
i=0
while [ "$(nl_now_ms)" -lt $end ]; do
    i=$((i + 1))
    run xl-list-grep sh -c 'xl list | grep -q "^tick"'
    run xl-info sh -c 'xl info | grep -q xen_version'
    run awk sh -c 'seq 1 200 | awk "{ s += \$1 } END { exit s != 20100 }"'
    run sed-sort sh -c 'ls /proc | sed s/x/y/ | sort | wc -l >/dev/null'
    run xl-vcpu xl vcpu-list
    run busybox-usleep usleep 1000
done
nl_wait_pid $mover 180
[ "$nl_pid_rc" != 124 ] || echo "mover did not end"
read -r mrounds fails mcmds <mover.txt || { mrounds=0 fails=1 mcmds=0; }
cmds=$((cmds + mcmds))

k=$(dmesg 2>/dev/null | grep -E 'segfault|general protection|invalid opcode|trap ' | tee dmesg-crashes.txt | wc -l)
cat dmesg-crashes.txt
ticks=ok
nl_wait_ticks tick $(($(nl_ticks_max tick) + 2)) 30 || ticks=broken
nl_check_ticks tick 1 || ticks=broken
if grep -qE 'Attempted to kill init|segfault|invalid opcode|general protection|Kernel panic' \
    "$NL_CONSOLE_DIR"/guest-tick*.log 2>/dev/null; then
    ticks=broken
    echo "guest console:"
    grep -E 'Attempted|segfault|invalid opcode|general protection|panic' \
        "$NL_CONSOLE_DIR"/guest-tick*.log
fi
n=$k
[ $sig -gt $n ] && n=$sig
n=$((n + fails))
echo "detail: $i rounds, $mrounds moves, $sig signal deaths, $k dmesg crash lines, $fails failed moves, last tick $(nl_ticks_max tick)"
echo "stress: $n crashes in $cmds commands, ticks $ticks" | tee -a "$COLO_OUT/results"
xl destroy tick >/dev/null 2>&1
exit 0

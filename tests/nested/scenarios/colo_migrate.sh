# nested.colo_migrate: colo migrate of a running PVH tick guest (or
# NESTED_TICK_TYPE's) between two
# colo hosts in the same dom0 ('colo receive' listening on 127.0.0.1, as
# `xl migrate DOM localhost` does it), then the failure cases: no target
# (the guest runs on), and a target that refuses the key (the guest runs
# on). Ticks must go on after each step, never going back. Then xl's own
# migrate, and colo save + xl restore + xl save after it (issue 25).
. "$NESTED_LIB"
nl_need_colo
type=${NESTED_TICK_TYPE:-pvh}
# HVM: exactly one device model (QEMU) runs, the live domain's.
dm_check() {
    [ "$type" != hvm ] || nl_check_dms "$@"
}
nl_start_tick tick "$type"
printf 'colo-nested-test-key-0123456789' >/tmp/key && chmod 600 /tmp/key
printf 'another-key-that-will-not-match!' >/tmp/badkey
chmod 600 /tmp/key /tmp/badkey # colo refuses a key others may read

# start_receiver PORT KEYFILE: colo receive in the background, waits for
# its "waiting for a primary" line (bounded).
start_receiver() {
    rm -f /tmp/recv.log
    $COLO receive --listen "127.0.0.1:$1" --key-file "$2" >/tmp/recv.log 2>&1 &
    recv_pid=$!
    end=$(($(nl_now_ms) + 60000))
    until grep -q "waiting for a primary" /tmp/recv.log 2>/dev/null; do
        [ "$(nl_now_ms)" -lt $end ] || { cat /tmp/recv.log; nl_fail "colo receive did not start"; }
        kill -0 $recv_pid 2>/dev/null || { cat /tmp/recv.log; nl_fail "colo receive died"; }
        usleep 100000
    done
}

# 1. a migration that works
start_receiver 8790 /tmp/key
before=$(nl_ticks_max tick)
id=$(nl_domid tick)
nl_time colo_migrate_local $COLO migrate tick 127.0.0.1:8790 --key-file /tmp/key ||
    { cat /tmp/recv.log; nl_fail "colo migrate"; }
nl_wait_pid $recv_pid 120
cat /tmp/recv.log
[ "$nl_pid_rc" = 0 ] || nl_fail "colo receive exited with $nl_pid_rc"
xl list
new=$(nl_domid tick)
[ -n "$new" ] || nl_fail "no domain tick after colo migrate"
[ "$new" != "$id" ] || nl_fail "tick is still domain $id"
[ "$(xl list | grep -c '^tick')" = 1 ] || nl_fail "not exactly one tick domain"
nl_assert_continues tick "$before" 60
dm_check 1 "after colo migrate"

# 2. no target: the guest runs on where it was
before=$(nl_ticks_max tick)
id=$(nl_domid tick)
$COLO migrate tick 127.0.0.1:8799 --key-file /tmp/key
rc=$?
echo "migrate to nowhere: exit $rc"
[ $rc -ne 0 ] || nl_fail "colo migrate to nowhere succeeded"
[ "$(nl_domid tick)" = "$id" ] || nl_fail "the domain changed after a failed migrate"
nl_assert_continues tick "$before" 60

# 3. a target with another key: refused, the guest runs on
start_receiver 8791 /tmp/badkey
before=$(nl_ticks_max tick)
$COLO migrate tick 127.0.0.1:8791 --key-file /tmp/key
rc=$?
echo "migrate with a wrong key: exit $rc"
[ $rc -ne 0 ] || nl_fail "colo migrate with a wrong key succeeded"
kill $recv_pid 2>/dev/null
nl_wait_pid $recv_pid 30
[ "$(nl_domid tick)" = "$id" ] || nl_fail "the domain changed after a refused migrate"
[ "$(xl list | grep -c '^tick')" = 1 ] || nl_fail "not exactly one tick domain"
nl_assert_continues tick "$before" 60
dm_check 1 "after the failed migrations"

# 4. xl's own local migration, the baseline, timed the same way
before=$(nl_ticks_max tick)
nl_time xl_migrate_local xl migrate -s "" tick "xl migrate-receive" ||
    nl_fail "xl migrate (local)"
nl_assert_continues tick "$before" 60

# 5. colo save after an xl migrate (issue 25): libxl's stored
# configuration still names the receiving side's "tick--incoming"; colo's
# save file must say what xl save would (the running domain's name), so
# that xl restore brings back "tick" and xl can save it again
before=$(nl_ticks_max tick)
$COLO save tick /tmp/after-xl.save || nl_fail "colo save after xl migrate"
if grep -aq 'tick--incoming' /tmp/after-xl.save; then
    nl_fail "colo's save file names tick--incoming"
fi
xl restore /tmp/after-xl.save || nl_fail "xl restore of colo's save file"
xl list tick >/dev/null || nl_fail "xl restore did not bring back 'tick'"
nl_assert_continues tick "$before" 60
xl save tick /tmp/after-xl.save || nl_fail "xl save of the restored guest"
xl restore /tmp/after-xl.save || nl_fail "xl restore of xl's save file"
rm -f /tmp/after-xl.save
xl destroy tick

{
    echo "# colo migrate vs xl migrate, local, $type tick guest (ms, status)"
    printf '%-24s %8s %s\n' op ms status
    while read -r op ms rc; do printf '%-24s %8s %s\n' "$op" "$ms" "$rc"; done \
        <"$COLO_OUT/timings"
} >"$COLO_OUT/results"
cat "$COLO_OUT/results"
echo "ok: colo migrate (local), failures leave the guest running"

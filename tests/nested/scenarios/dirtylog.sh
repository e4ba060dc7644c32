# nested.dirtylog (nested-run --linux): colo's soft-dirty tracking where
# the kernel has it (Debian's kernel in a Linux host under QEMU; the CI
# machine's kernel has no soft-dirty). Steps:
#   1. checkpoint.dirtylog's binary: the soft-dirty set of a real QEMU
#      holds every page the compare scan finds (it must not SKIP here);
#   2. colo protect of the test guest (Remus, 100 ms) with
#      COLO_DIRTY_LOG=verify (every capture checked against the scan: a
#      missed page fails the protection); colo status says the method;
#   3. colo migrate of the same guest while it dirties memory (the rounds
#      pause the guest for reading the bits; verified too); the guest
#      counts on at the destination;
#   4. a small bench-checkpoint (128 MiB, soft-dirty), whose JSON line
#      lands in $COLO_OUT/bench.json (informative: not counted).
# Needs: --colo, --bin test_checkpoint_dirtylog, --bin bench-checkpoint,
# --copy colo-test-guest.elf (nested.dirtylog in CMakeLists.txt).
. "$NESTED_LIB"
nl_need_colo
# On failure: stop what still runs (its output goes into run.sh's pipe:
# linux-init would wait for it) and keep the ends of colo's logs.
bg=''
fail() {
    local f
    # shellcheck disable=SC2086
    kill $bg 2>/dev/null
    # (inside this nested host only: every QEMU here is this run's)
    killall -9 qemu-system-x86_64 2>/dev/null
    for f in /tmp/*.log; do
        tail -c 65536 "$f" >"$COLO_OUT/${f##*/}" 2>/dev/null
    done
    nl_fail "$@"
}
# Everything is slow here (QEMU under TCG under TCG): a pause can take a
# second, so the links wait 20 s before calling a peer gone.
lt=20000
export COLO_TGUEST_KERNEL=/share/files/colo-test-guest.elf
[ -r "$COLO_TGUEST_KERNEL" ] || fail "no test guest in /share/files"
export TMPDIR=/dev/shm
bin=/share/bin

# ---- 1. the unit test on a kernel with soft-dirty
echo "== checkpoint.dirtylog on $(uname -r)"
LD_LIBRARY_PATH=$COLO_LIB nl_time unit_test \
    $bin/test_checkpoint_dirtylog --verbose --jobs 1 >unit.log 2>&1
rc=$?
cat unit.log
[ $rc = 0 ] || fail "test_checkpoint_dirtylog: status $rc"
grep -q "soft-dirty on this kernel: yes" unit.log ||
    fail "soft-dirty not detected on $(uname -r)"
grep -q "SKIP" unit.log && fail "a soft-dirty case skipped"

# ---- 2. colo protect, verified
head -c 32 /dev/urandom | base64 >/tmp/key
chmod 600 /tmp/key # colo refuses a key others may read
bios=
[ -f /usr/share/qemu/qboot.rom ] &&
    bios=', "qemu": {"extra_args": ["-bios", "/usr/share/qemu/qboot.rom"]}'
cat >/tmp/vm.json <<JSON
{"name": "dl", "memory_mb": 64, "vcpus": 1,
 "kernel": "$COLO_TGUEST_KERNEL", "cmdline": "dirty=4 rate=8"$bios}
JSON
counter() { od -An -t u4 -j $((0x200004)) -N4 "$1" | tr -d ' '; }
export COLO_DIRTY_LOG=verify
echo "== colo protect (Remus), COLO_DIRTY_LOG=verify"
$COLO start /tmp/vm.json --state-dir /tmp/p --key-file /tmp/key \
    --timeout $lt >/tmp/primary.log 2>&1 &
prim=$!
bg="$bg $prim"
nl_wait_log /tmp/primary.log "running" 120 $prim ||
    { cat /tmp/primary.log; fail "colo start"; }
$COLO standby --listen 127.0.0.1:7311 --state-dir /tmp/s --key-file /tmp/key \
    --timeout $lt >/tmp/standby.log 2>&1 &
sb=$!
bg="$bg $sb"
nl_wait_log /tmp/standby.log "waiting for a primary" 60 $sb ||
    { cat /tmp/standby.log; fail "standby"; }
: >/tmp/protect.log
$COLO protect dl 127.0.0.1:7311 --mode remus --interval 100 --follow \
    --state-dir /tmp/p >/tmp/protect.log 2>&1 &
pr=$!
bg="$bg $pr"
end=$(($(nl_now_ms) + 240000))
n=0
while [ "$n" -lt 20 ]; do
    n=$(grep -c '^checkpoint' /tmp/protect.log 2>/dev/null)
    n=${n:-0}
    [ "$(nl_now_ms)" -lt $end ] || break
    kill -0 $pr 2>/dev/null || break
    usleep 300000
done
$COLO status dl --state-dir /tmp/p --json >status.json 2>&1
cat status.json
tail -n 5 /tmp/protect.log
[ "$n" -ge 20 ] || { cat /tmp/primary.log; fail "only $n checkpoints"; }
grep -q '"dirty_method": *"soft-dirty+verify"' status.json ||
    fail "colo status does not say soft-dirty+verify"
grep -q '"protected": *true' status.json || fail "not protected"
grep -q "soft-dirty missed" /tmp/primary.log &&
    fail "soft-dirty missed pages (primary.log)"
$COLO unprotect dl --state-dir /tmp/p >/dev/null 2>&1
nl_wait_pid $pr 30
kill $sb 2>/dev/null
nl_wait_pid $sb 30

# ---- 3. colo migrate, verified rounds
echo "== colo migrate, COLO_DIRTY_LOG=verify"
$COLO receive --listen 127.0.0.1:7312 --state-dir /tmp/r --key-file /tmp/key \
    --timeout $lt >/tmp/receive.log 2>&1 &
rcv=$!
bg="$bg $rcv"
nl_wait_log /tmp/receive.log "waiting for a primary" 60 $rcv ||
    { cat /tmp/receive.log; fail "receive"; }
nl_time migrate $COLO migrate dl 127.0.0.1:7312 --state-dir /tmp/p \
    >/tmp/migrate.log 2>&1
rc=$?
cat /tmp/migrate.log
[ $rc = 0 ] || { tail -n 20 /tmp/primary.log; fail "migrate: status $rc"; }
grep -q "soft-dirty missed" /tmp/primary.log &&
    fail "soft-dirty missed pages in a migrate round"
grep -q "dirty pages: soft-dirty" /tmp/primary.log ||
    fail "the primary did not track with soft-dirty"
nl_wait_log /tmp/receive.log "now runs here" 30 $rcv ||
    { cat /tmp/receive.log; fail "the VM does not run at the destination"; }
c1=$(counter /tmp/r/dl/ram)
usleep 1500000
c2=$(counter /tmp/r/dl/ram)
echo "guest counter at the destination: $c1 -> $c2"
[ "$c2" -gt "$c1" ] || fail "the migrated guest does not count"
$COLO stop dl --state-dir /tmp/r >/dev/null 2>&1
nl_wait_pid $rcv 30
nl_wait_pid $prim 30
unset COLO_DIRTY_LOG

# ---- 4. a small bench (informative: under TCG in TCG its in-process
# engines share one loop with synchronous QEMU launches, and a QMP
# negotiation can take more than 10 s; a failure here is reported, not
# counted)
echo "== bench-checkpoint (soft-dirty)"
# No scaling run here: a 1 GiB guest's QEMU starts too slowly.
LD_LIBRARY_PATH=$COLO_LIB nl_time bench $bin/bench-checkpoint --ram 128 \
    --scale-ram 0 --colo-count 0 --dirty 8 \
    --count ${DIRTYLOG_BENCH_COUNT:-10} --link-timeout $lt >bench.log 2>&1
rc=$?
cat bench.log
if [ $rc = 0 ]; then
    # (bench.log ends with nl_time's line: the JSON is the one before)
    grep '^{"bench"' bench.log | tail -n 1 >bench.json
    grep -q '"method":"soft-dirty"' bench.json ||
        fail "bench did not use soft-dirty"
else
    echo "dirtylog: bench-checkpoint failed (status $rc; not counted)"
fi
echo "dirtylog: all steps passed"

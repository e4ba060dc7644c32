# nested-lib.sh: helpers for run.sh scripts in a nested host's dom0
# (busybox sh). Use: . "$NESTED_LIB". Copied to /share by nested-run.
# Tick guests print "tick N" on their console; xenconsoled logs it to
# /var/log/xen/console/guest-<name>.log (guest-<name>--incoming.log after
# an incoming migration).

NL_CONSOLE_DIR=/var/log/xen/console

# nl_fail MSG: report a failed assertion and end run.sh with status 1;
# what the guests were doing goes to $COLO_OUT/guests.txt (nl_guest_dump).
nl_fail() {
    echo "FAIL: $*"
    nl_guest_dump >"${COLO_OUT:-/tmp}/guests.txt" 2>&1
    exit 1
}

# nl_guest_dump: xl list, Xen's log of guest faults (a triple fault dumps
# the vcpu), and every guest's vcpu 0 (registers, code, stack) by xenctx,
# twice 0.5 s apart, so a spinning guest shows where it spins. Symbols come
# from /share/files/System.map if the run copied the guest kernel's in
# (nested-run --copy; Debian ships it in linux-image-*-dbg).
nl_guest_dump() {
    local id k sm=
    [ -r /share/files/System.map ] && sm="-s /share/files/System.map"
    xl list
    xl dmesg | grep -A16 -E 'Triple fault|crashed|domain_crash' | head -80
    for k in 1 2; do
        for id in $(xl list | awk 'NR > 2 { print $2 }'); do
            echo "== dom $id vcpu 0 (sample $k)"
            # shellcheck disable=SC2086
            xenctx $sm -S -a "$id" 0 2>&1 | head -60
        done
        usleep 500000
    done
}

# nl_now_ms: dom0 uptime in milliseconds (10 ms resolution).
nl_now_ms() {
    # Shell builtins only: no process that could crash (see nl_check_ticks).
    local up rest
    read -r up rest </proc/uptime
    echo $((${up%.*} * 1000 + 1${up#*.} * 10 - 1000))
}

# nl_time LABEL CMD...: run CMD, append "LABEL <ms> <status>" to
# $COLO_OUT/timings and print it; returns CMD's status.
nl_time() {
    local label=$1 t0 t1 rc
    shift
    t0=$(nl_now_ms)
    "$@"
    rc=$?
    t1=$(nl_now_ms)
    echo "$label $((t1 - t0)) $rc" >>"$COLO_OUT/timings"
    echo "timing: $label $((t1 - t0)) ms (status $rc)"
    return $rc
}

# nl_tick_cfg NAME [pvh|pv|hvm] [MEM_MiB]: print an xl config for a tick
# guest. (Not pinned off dom0's CPU: with cpus = "all,^0" the guest twice
# stopped ticking after boot; docs/nested.md.) An HVM tick guest boots the
# same kernel and initramfs through QEMU's direct kernel boot (hvmloader,
# SeaBIOS, the linuxboot option ROM); it prints on the Xen PV console hvc0
# too, so xenconsoled logs its ticks like a PVH guest's. No display, no
# disk, no network.
nl_tick_cfg() {
    cat <<CFG
name = "$1"
type = "${2:-pvh}"
kernel = "$COLO_TICK_KERNEL"
ramdisk = "$COLO_TICK_INITRD"
extra = "console=hvc0 quiet"
memory = ${3:-128}
vcpus = 1
tsc_mode = "native"
on_crash = "preserve"
CFG
    # NESTED_TICK_HAP=0 (nested-run --env): shadow paging instead of the
    # emulated NPT (needs --xen-shadow for PVH/HVM).
    [ "${NESTED_TICK_HAP:-1}" != 0 ] || echo "hap = 0"
    [ "${2:-pvh}" = hvm ] || return 0
    cat <<CFG
device_model_version = "qemu-xen"
vga = "none"
vnc = 0
sdl = 0
CFG
}

# nl_need_colo: end run.sh unless nested-run --colo gave it $COLO.
nl_need_colo() {
    [ -n "${COLO:-}" ] || nl_fail "no \$COLO (nested-run --colo)"
}

# nl_start_tick NAME [pvh|pv|hvm]: create tick guest NAME from
# /tmp/NAME.cfg (nl_tick_cfg), timed as "create", and wait for its third
# tick (120 s); run.sh ends if it does not come.
nl_start_tick() {
    nl_tick_cfg "$1" "${2:-pvh}" >"/tmp/$1.cfg"
    nl_time create xl create "/tmp/$1.cfg" || nl_fail "xl create"
    nl_wait_ticks "$1" 3 120 || nl_fail "the tick guest does not tick"
}

# nl_start_standby PORT: colo standby for guest tick on 127.0.0.1:PORT,
# key /tmp/key, fencing with "xl destroy tick", logging to
# /tmp/standby.log; its pid in $sb once it waits for a primary (60 s).
# Not in $(...): the standby is a child of this shell.
nl_start_standby() {
    $COLO standby --listen "127.0.0.1:$1" --key-file /tmp/key \
        --fence-cmd "xl destroy tick" >/tmp/standby.log 2>&1 &
    sb=$!
    nl_wait_log /tmp/standby.log "waiting for a primary" 60 $sb ||
        { cat /tmp/standby.log; nl_fail "standby"; }
}

# nl_paging NAME: "hap" or "shadow": how Xen pages guest NAME (its domain
# dump, debug key q; the last one in Xen's log counts).
nl_paging() {
    local id
    id=$(nl_domid "$1")
    [ -n "$id" ] || { echo none; return 1; }
    xl debug-keys q
    xl dmesg | awk -v d="domain $id:" '
        /General information for domain/ { cur = index($0, d) > 0 }
        cur && /paging assistance: hap / { m = "hap" }
        cur && /paging assistance: shadow / { m = "shadow" }
        END { print m ? m : "unknown" }'
}

# nl_tick_logs NAME: the console logs of guest NAME, oldest first.
nl_tick_logs() {
    ls -tr "$NL_CONSOLE_DIR/guest-$1.log" \
        "$NL_CONSOLE_DIR/guest-$1--incoming.log" 2>/dev/null
}

# nl_ticks_max NAME: the highest tick guest NAME printed so far (0: none).
nl_ticks_max() {
    _nl_ticks "$1" '{ if ($2 + 0 > m) m = $2 + 0 }'
}

# nl_wait_ticks NAME MIN SECONDS: wait until guest NAME printed a tick
# >= MIN; status 1 (and a message) at the deadline.
nl_wait_ticks() {
    local end=$(($(nl_now_ms) + $3 * 1000)) m
    while :; do
        m=$(nl_ticks_max "$1")
        [ "$m" -ge "$2" ] && return 0
        if [ "$(nl_now_ms)" -ge $end ]; then
            echo "nl_wait_ticks: $1 reached tick $m, not $2, in $3 s"
            return 1
        fi
        usleep 200000
    done
}

# nl_ticks_min NAME: the lowest tick in NAME's console logs (0: none).
nl_ticks_min() {
    _nl_ticks "$1" '{ if (!n || $2 + 0 < m) m = $2 + 0; n = 1 }'
}

# nl_ticks_in FILE: the highest tick in one console log (0: none).
nl_ticks_in() {
    [ -f "$1" ] || { echo 0; return; }
    _nl_ticks_files '{ if ($2 + 0 > m) m = $2 + 0 }' "$1"
}

# _nl_ticks NAME AWK-ACTION: run ACTION on every "tick N" line of NAME's
# console logs and print m.
_nl_ticks() {
    local logs
    logs=$(nl_tick_logs "$1")
    [ -n "$logs" ] || { echo 0; return; }
    # shellcheck disable=SC2086
    _nl_ticks_files "$2" $logs
}

# _nl_ticks_files AWK-ACTION FILE...: the same on the given logs; one awk,
# taken again if it crashed (see nl_check_ticks).
_nl_ticks_files() {
    local action=$1 out try
    shift
    for try in 1 2 3; do
        out=$(awk '{ sub(/\r$/, "") } /^tick [0-9]+$/ '"$action"' END { print m + 0 }' "$@") &&
            [ -n "$out" ] && { echo "$out"; return; }
    done
    echo 0
}

# nl_ticks_increase FILE: the ticks in one console log strictly increase.
# Status 0; 1 with a message if not; 2 if awk itself crashed.
nl_ticks_increase() {
    awk -v f="$1" '
        { sub(/\r$/, "") }
        /^tick [0-9]+$/ {
            if (n && $2 + 0 <= last) {
                printf "nl_check_ticks: %s: tick %d after %d\n", f, $2, last
                bad = 1
            }
            last = $2 + 0; n++
        }
        END { exit bad }' "$1"
    case $? in 0) return 0 ;; 1) return 1 ;; *) return 2 ;; esac
}

# nl_check_ticks NAME [ONES]: the ticks never went back nor restarted: in
# every console log of NAME the tick numbers strictly increase, and
# "tick 1" appears ONES times (default 1; 0 on a host the guest migrated
# to) in all of them together. Status 1 with a message if not.
nl_check_ticks() {
    local try rc
    # A busybox applet now and then dies at start-up in this dom0 (PV under
    # TCG; docs/nested.md): a check whose own tools crashed (status 2) is
    # taken again, a real verdict (0 or 1) stands.
    for try in 1 2 3; do
        _nl_check_ticks_once "$@"
        rc=$?
        [ $rc -eq 2 ] || return $rc
        echo "nl_check_ticks: a tool crashed; checking again"
    done
    return 1
}

_nl_check_ticks_once() {
    local f logs ones want=${2:-1} st
    logs=$(nl_tick_logs "$1")
    [ -n "$logs" ] || { echo "nl_check_ticks: no console log of $1"; return 1; }
    for f in $logs; do
        nl_ticks_increase "$f"
        st=$?
        [ $st -eq 0 ] || return $st
    done
    ones=$(awk '{ sub(/\r$/, "") } /^tick 1$/ { n++ } END { print n + 0 }' $logs) ||
        return 2
    [ -n "$ones" ] || return 2
    [ "$ones" = "$want" ] ||
        { echo "nl_check_ticks: $1 printed tick 1 $ones times, not $want"; return 1; }
    return 0
}

# nl_assert_continues NAME BEFORE SECONDS: after an operation, guest NAME
# goes on counting: a tick > BEFORE + 2 within SECONDS, and nl_check_ticks.
nl_assert_continues() {
    nl_wait_ticks "$1" $(($2 + 3)) "$3" || nl_fail "$1 does not tick on after tick $2"
    nl_check_ticks "$1" || nl_fail "$1: ticks not continuous"
    echo "ok: $1 continues: tick $2 -> $(nl_ticks_max "$1")"
}

# nl_wait_peer PATH SECONDS: wait until PATH exists, a file the other host
# writes in the shared /share (the two hosts meet through such files);
# status 1 at the deadline, or at once when the other host's run.sh has
# ended (its /share/host<N>/status exists) without writing PATH.
nl_wait_peer() {
    local end=$(($(nl_now_ms) + $2 * 1000))
    local st=/share/host$((3 - COLO_HOST_ID))/status
    until [ -e "$1" ]; do
        if [ -e "$st" ]; then
            [ -e "$1" ] && return 0
            echo "nl_wait_peer: the other host ended (status $(cat "$st")) without $1"
            return 1
        fi
        [ "$(nl_now_ms)" -ge $end ] && { echo "nl_wait_peer: no $1 after $2 s"; return 1; }
        usleep 200000
    done
}

# nl_domid NAME: the domain id of NAME (empty if there is none).
nl_domid() {
    xl domid "$1" 2>/dev/null
}

# nl_wait_log FILE TEXT SECONDS [PID]: wait until FILE contains TEXT;
# status 1 (and a message) at the deadline or when PID has ended first.
nl_wait_log() {
    local end=$(($(nl_now_ms) + $3 * 1000))
    until grep -q "$2" "$1" 2>/dev/null; do
        [ "$(nl_now_ms)" -lt $end ] || { echo "nl_wait_log: no '$2' in $1 after $3 s"; return 1; }
        if [ -n "${4:-}" ] && ! kill -0 "$4" 2>/dev/null; then
            echo "nl_wait_log: process $4 ended before '$2' appeared in $1"
            return 1
        fi
        usleep 200000
    done
}

# nl_wait_pid PID SECONDS: wait for a child of this shell; its exit status
# in $nl_pid_rc (124 at the deadline, after a SIGKILL). Not in $(...): only
# this shell can wait for its children.
nl_wait_pid() {
    local end=$(($(nl_now_ms) + $2 * 1000))
    while kill -0 "$1" 2>/dev/null; do
        if [ "$(nl_now_ms)" -ge $end ]; then
            kill -9 "$1" 2>/dev/null
            wait "$1"
            nl_pid_rc=124
            return
        fi
        usleep 200000
    done
    wait "$1"
    nl_pid_rc=$?
}

# nl_kill_tree PID: SIGKILL PID's children, then PID (colo and its libxc
# helper; a host dying as far as its processes go).
nl_kill_tree() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(awk '{ print $4 }' "$p/stat" 2>/dev/null)" = "$1" ] &&
            kill -9 "${p#/proc/}" 2>/dev/null
    done
    kill -9 "$1" 2>/dev/null
}

# nl_xl_remus DOMAIN N INTERVAL_MS: run xl remus of DOMAIN within this dom0
# until its Nth checkpoint (libxl's Nth suspend request, seen with -vvv),
# then kill it (the guest goes with it: xl remus has no clean stop). Prints
# the milliseconds it took; status 1 if it never got there (300 s).
nl_xl_remus() {
    local t0 end n=0 p
    t0=$(nl_now_ms)
    xl -vvv remus -F -n -s "" -i "$3" "$1" "xl migrate-receive -r" >/tmp/nl-remus.log 2>&1 &
    p=$!
    end=$(($(nl_now_ms) + 300000))
    while [ "$n" -lt "$2" ] && [ "$(nl_now_ms)" -lt $end ] && kill -0 $p 2>/dev/null; do
        usleep 200000
        n=$(grep -c "issuing .* suspend request" /tmp/nl-remus.log)
        n=${n:-0}
    done
    echo $(($(nl_now_ms) - t0))
    nl_kill_tree $p
    [ "$n" -ge "$2" ]
}

# nl_dm_pid NAME: the pid of the device model (QEMU) of HVM guest NAME, as
# libxl records it in xenstore (empty if there is none).
nl_dm_pid() {
    local d
    d=$(nl_domid "$1")
    [ -n "$d" ] || return 1
    xenstore-read "/local/domain/$d/image/device-model-pid" 2>/dev/null
}

# nl_dm_cmdline NAME: the command line of NAME's device model, one line.
nl_dm_cmdline() {
    local p
    p=$(nl_dm_pid "$1") && [ -n "$p" ] && [ -r "/proc/$p/cmdline" ] ||
        { echo "nl_dm_cmdline: no device model of $1"; return 1; }
    tr '\0' ' ' <"/proc/$p/cmdline"
    echo
}

# nl_kill_primary_failover PRIMARY_PID STANDBY_PID STANDBY_LOG: the
# primary "host" dies (its colo and helper SIGKILLed); the standby must
# take over (exit 0, "now runs here after failover") and exactly one tick
# domain remain. The takeover time goes to the timings as "failover".
nl_kill_primary_failover() {
    local t2 t3
    nl_kill_tree "$1"
    wait "$1" 2>/dev/null
    t2=$(nl_now_ms)
    nl_wait_pid "$2" 120
    t3=$(nl_now_ms)
    echo "failover $((t3 - t2)) $nl_pid_rc" >>"$COLO_OUT/timings"
    cat "$3"
    [ "$nl_pid_rc" = 0 ] || nl_fail "the standby exited with $nl_pid_rc"
    grep -q "now runs here after failover" "$3" || nl_fail "no failover message"
    xl list
    [ -n "$(nl_domid tick)" ] || nl_fail "no domain tick after the failover"
    [ "$(xl list | grep -c '^tick')" = 1 ] ||
        nl_fail "not exactly one tick domain after the failover"
}

# nl_check_dms N WHY: exactly N device models (QEMU) run in dom0; WHY
# names the step for the failure message.
nl_check_dms() {
    local n
    n=$(ps | grep -c '[x]en-qemu-system')
    [ "$n" = "$1" ] || { ps; nl_fail "$n device models run, expected $1 ($2)"; }
}

# _nl_u32s FILE OFFSET N: N little-endian u32 at OFFSET of FILE, in decimal.
_nl_u32s() {
    od -A n -t u4 -j "$2" -N $(($3 * 4)) "$1"
}

# nl_save_records FILE: list the records of an xl save file: the xl header,
# then one line per record "OFFSET LAYER TYPE LENGTH [emulator ID index N]"
# for the libxl v2 records and the libxc records inside LIBXC_CONTEXT
# (Xen's libxl/libxc migration stream specs; 4.17 type numbers). Status 1
# with a message if the file is not laid out that way.
nl_save_records() {
    local f=$1 size off t l n=0 layer=libxl name opt
    size=$(stat -c %s "$f") || return 1
    [ "$(dd if="$f" bs=27 count=1 2>/dev/null)" = "Xen saved domain, xl format" ] ||
        { echo "nl_save_records: $f: no xl magic"; return 1; }
    # shellcheck disable=SC2046
    set -- $(_nl_u32s "$f" 32 4)
    [ "${1:-}" = 16909060 ] || { echo "nl_save_records: $f: byte order $1"; return 1; }
    echo "xl header: mandatory_flags $2 optional_flags $3 optional_data $4 bytes, file $size bytes"
    off=$((48 + $4))
    [ "$(dd if="$f" bs=1 skip=$off count=8 2>/dev/null)" = LibxlFmt ] ||
        { echo "nl_save_records: $f: no LibxlFmt at $off"; return 1; }
    # shellcheck disable=SC2046
    set -- $(od -A n -t x1 -j $((off + 8)) -N 8 "$f")
    echo "libxl header at $off: version $(( 0x$1$2$3$4 )) options 0x$5$6$7$8"
    off=$((off + 16))
    while [ $n -lt 10000 ] && [ $off -lt "$size" ]; do
        n=$((n + 1))
        # shellcheck disable=SC2046
        set -- $(_nl_u32s "$f" $off 2)
        t=$1 l=$2
        [ -n "$l" ] || { echo "nl_save_records: $f: truncated at $off"; return 1; }
        opt=
        if [ $layer = libxl ]; then
            case $t in
            0) name=END ;; 1) name=LIBXC_CONTEXT ;;
            2) name=EMULATOR_XENSTORE_DATA ;; 3) name=EMULATOR_CONTEXT ;;
            4) name=CHECKPOINT_END ;; 5) name=CHECKPOINT_STATE ;;
            *) name=UNKNOWN-$t ;;
            esac
            case $t in 2 | 3)
                # shellcheck disable=SC2046
                set -- $(_nl_u32s "$f" $((off + 8)) 2)
                opt=" emulator $1 index $2" ;;
            esac
        else
            case $((t & 0x7fffffff)) in
            0) name=END ;; 1) name=PAGE_DATA ;; 2) name=X86_PV_INFO ;;
            3) name=X86_PV_P2M_FRAMES ;; 4) name=X86_PV_VCPU_BASIC ;;
            5) name=X86_PV_VCPU_EXTENDED ;; 6) name=X86_PV_VCPU_XSAVE ;;
            7) name=SHARED_INFO ;; 8) name=X86_TSC_INFO ;;
            9) name=HVM_CONTEXT ;; 10) name=HVM_PARAMS ;; 11) name=TOOLSTACK ;;
            12) name=X86_PV_VCPU_MSRS ;; 13) name=VERIFY ;; 14) name=CHECKPOINT ;;
            15) name=CHECKPOINT_DIRTY_PFN_LIST ;; 16) name=STATIC_DATA_END ;;
            17) name=X86_CPUID_POLICY ;; 18) name=X86_MSR_POLICY ;;
            *) name=UNKNOWN-$t ;;
            esac
        fi
        echo "$off $layer $name $l$opt"
        off=$((off + 8 + (l + 7) / 8 * 8))
        if [ $layer = libxl ] && [ "$t" = 1 ]; then
            # libxc image header (24 bytes) and domain header (16).
            # shellcheck disable=SC2046
            set -- $(_nl_u32s "$f" $((off + 24)) 1)
            echo "$off libxc headers: domain type $1 (1 PV, 2 HVM, 3 PVH)"
            off=$((off + 40))
            layer=libxc
        elif [ $layer = libxc ] && [ "$t" = 0 ]; then
            layer=libxl
        elif [ $layer = libxl ] && [ "$t" = 0 ]; then
            [ $off -eq "$size" ] ||
                echo "nl_save_records: $f: $((size - off)) bytes after END"
            return 0
        fi
    done
    echo "nl_save_records: $f: no libxl END record"
    return 1
}

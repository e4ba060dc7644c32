# nested-lib.sh: helpers for run.sh scripts in a nested host's dom0
# (busybox sh). Use: . "$NESTED_LIB". Copied to /share by nested-run.
# Tick guests print "tick N" on their console; xenconsoled logs it to
# /var/log/xen/console/guest-<name>.log (guest-<name>--incoming.log after
# an incoming migration).

NL_CONSOLE_DIR=/var/log/xen/console

# nl_fail MSG: report a failed assertion and end run.sh with status 1.
nl_fail() {
    echo "FAIL: $*"
    exit 1
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

# nl_tick_cfg NAME [pvh|pv] [MEM_MiB]: print an xl config for a tick guest.
# (Not pinned off dom0's CPU: with cpus = "all,^0" the guest twice stopped
# ticking after boot; docs/nested.md.)
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

# nl_wait_file PATH SECONDS: wait until PATH exists (e.g. written by the
# other host in the shared /share); status 1 at the deadline.
nl_wait_file() {
    local end=$(($(nl_now_ms) + $2 * 1000))
    until [ -e "$1" ]; do
        [ "$(nl_now_ms)" -ge $end ] && { echo "nl_wait_file: no $1 after $2 s"; return 1; }
        usleep 200000
    done
}

# nl_wait_peer PATH SECONDS: like nl_wait_file for a file the other host
# writes, but gives up early when the other host's run.sh has ended
# (its /share/host<N>/status exists) without writing PATH.
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

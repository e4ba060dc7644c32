# shellcheck shell=bash
# tests/cluster/cluster-lib.sh: three cluster nodes on one machine, for the
# cluster.* tests (sourced by tests/cluster/cluster-test).
#
# A node nN (N = 1..3) is a network namespace bound at $T/ns/net-nN and a
# mount namespace bound at $T/ns/mnt-nN. In the mount namespace these are
# the node's own: /etc/corosync, /var/lib/corosync, /var/lib/pacemaker,
# /run, /var/log/pacemaker, /var/log/corosync (bind mounts of $T/nN/...),
# /dev/shm (a tmpfs: libqb's ring buffers), and two overlays that add the
# test's fence agent to /usr/sbin and the colo agent to
# /usr/lib/ocf/resource.d (nothing of the machine's own changes). libqb's
# IPC sockets are abstract, hence per network namespace.
# Each node has two veths to a bridge in the hub namespace colo-cl-<pid>:
# r0 (Corosync ring, 10.221.0.N/24) and c0 (colo's replication link,
# 10.221.1.N/24). No route leaves the namespaces.
# corosync -f and pacemakerd -f run by hand in the node; the CIB is seeded
# (dc-deadtime=5s). Every wait is bounded; cl_cleanup kills every process
# of every node namespace and unmounts everything.

CL_VM=cvm

cl_log() { printf '%s [%6.1fs] %s\n' "$(date +%T)" "$(cl_elapsed)" "$*"; }
cl_now() { date +%s.%N; }
cl_elapsed() { awk -v a="$CL_T0" -v b="$(cl_now)" 'BEGIN { printf "%.1f", b - a }'; }

in_node() { # in_node N CMD...
	local n=$1
	shift
	nsenter --net="$T/ns/net-n$n" --mount="$T/ns/mnt-n$n" -- "$@"
}

node_pids() { # the pids whose network namespace is node N's
	local ino
	ino=$(stat -L -c %i "$T/ns/net-n$1" 2>/dev/null) || return 0
	find /proc/[0-9]*/ns/net -maxdepth 0 -lname "net:\[$ino\]" 2>/dev/null |
		cut -d/ -f3
}

kill_node() { # SIGKILL every process of node N (bounded)
	local i p left
	for i in $(seq 1 50); do
		left=0
		for p in $(node_pids "$1"); do
			kill -KILL "$p" 2>/dev/null && left=$((left + 1))
		done
		[ "$left" -eq 0 ] && return 0
		sleep 0.1
	done
	return 1
}

# wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
	local secs=$1 what=$2 end
	shift 2
	end=$(awk -v n="$(cl_now)" -v s="$secs" 'BEGIN { printf "%d", n + s }')
	while [ "$(date +%s)" -le "$end" ]; do
		"$@" && return 0
		sleep 0.2
	done
	cl_log "timed out after ${secs}s waiting for: $what"
	return 1
}

cl_mk_node() {
	local n=$1 d="$T/n$1" sub
	mkdir -p "$d"/{etc-corosync,var-lib-corosync,run,log-pacemaker,log-corosync}
	mkdir -p "$d"/var-lib-pacemaker/{cib,pengine,blackbox,cores}
	chown -R hacluster:haclient "$d"/var-lib-pacemaker "$d"/log-pacemaker
	chmod 750 "$d"/var-lib-pacemaker/*
	touch "$T/ns/net-n$n" "$T/ns/mnt-n$n"
	unshare --net="$T/ns/net-n$n" --mount="$T/ns/mnt-n$n" \
		--propagation private sh -ec "
		mount --bind '$d/etc-corosync' /etc/corosync
		mount --bind '$d/var-lib-corosync' /var/lib/corosync
		mount --bind '$d/var-lib-pacemaker' /var/lib/pacemaker
		mount --bind '$d/run' /run
		mount --bind '$d/log-pacemaker' /var/log/pacemaker
		mount --bind '$d/log-corosync' /var/log/corosync
		mount -t tmpfs -o mode=1777 tmpfs /dev/shm
		mount -t overlay overlay -o 'lowerdir=$T/sbin:/usr/sbin' /usr/sbin
		mount -t overlay overlay -o 'lowerdir=$T/ocf:/usr/lib/ocf/resource.d' /usr/lib/ocf/resource.d
		ip link set lo up" || return 1
	stat -L -c %i "$T/ns/net-n$n" >"$T/ns/ino-n$n" || return 1
	for sub in r c; do
		# Only the network namespace: the hub's name is in the machine's
		# /run/netns.
		nsenter --net="$T/ns/net-n$n" ip link add ${sub}0 type veth \
			peer name "h$n$sub" netns "$CL_HUB" || return 1
		ip -n "$CL_HUB" link set "h$n$sub" master br0 up || return 1
	done
	in_node "$n" ip addr add "10.221.0.$n/24" dev r0 &&
		in_node "$n" ip addr add "10.221.1.$n/24" dev c0 &&
		in_node "$n" ip link set r0 up && in_node "$n" ip link set c0 up
}

cl_corosync_conf() {
	cat <<EOF
totem {
    version: 2
    cluster_name: colotest
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: 1000
}
nodelist {
    node {
        ring0_addr: 10.221.0.1
        name: n1
        nodeid: 1
    }
    node {
        ring0_addr: 10.221.0.2
        name: n2
        nodeid: 2
    }
    node {
        ring0_addr: 10.221.0.3
        name: n3
        nodeid: 3
    }
}
quorum {
    provider: corosync_votequorum
}
logging {
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_stderr: no
    to_syslog: no
    timestamp: on
}
EOF
}

# The seeded CIB: fencing with fence_colotest, the colo clone on n1/n2
# (n3 only votes: a 2-node + arbiter layout), dc-deadtime=5s.
cl_cib() {
	cat <<EOF
<cib validate-with="pacemaker-3.9" epoch="1" num_updates="0" admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="o-stonith" name="stonith-enabled" value="true"/>
        <nvpair id="o-dcdead" name="dc-deadtime" value="5s"/>
        <nvpair id="o-noq" name="no-quorum-policy" value="stop"/>
        <nvpair id="o-stto" name="stonith-timeout" value="30s"/>
        <nvpair id="o-recheck" name="cluster-recheck-interval" value="1min"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources>
      <primitive id="fence" class="stonith" type="fence_colotest">
        <instance_attributes id="fence-ia">
          <nvpair id="fence-hl" name="pcmk_host_list" value="n1 n2 n3"/>
          <nvpair id="fence-ns" name="nsdir" value="$T/ns"/>
        </instance_attributes>
        <operations>
          <op id="fence-mon" name="monitor" interval="60s"/>
        </operations>
      </primitive>
      <clone id="vm-clone">
        <meta_attributes id="vm-clone-meta">
          <nvpair id="vm-promotable" name="promotable" value="true"/>
          <nvpair id="vm-pmax" name="promoted-max" value="1"/>
          <nvpair id="vm-pnmax" name="promoted-node-max" value="1"/>
          <nvpair id="vm-cmax" name="clone-max" value="2"/>
          <nvpair id="vm-cnmax" name="clone-node-max" value="1"/>
          <nvpair id="vm-notify" name="notify" value="true"/>
        </meta_attributes>
        <primitive id="vm" class="ocf" provider="colo" type="colo">
          <instance_attributes id="vm-ia">
            <nvpair id="vm-vm" name="vm" value="$CL_VM"/>
            <nvpair id="vm-config" name="config" value="$T/vm.json"/>
            <nvpair id="vm-key" name="key_file" value="$T/key"/>
            <nvpair id="vm-colo" name="colo" value="$COLO"/>
            <nvpair id="vm-nodes" name="nodes" value="n1=10.221.1.1:8790 n2=10.221.1.2:8790"/>
            <nvpair id="vm-fd" name="fence_delay" value="4"/>
          </instance_attributes>
          <operations>
            <op id="vm-start" name="start" interval="0" timeout="30s"/>
            <op id="vm-stop" name="stop" interval="0" timeout="60s"/>
            <op id="vm-promote" name="promote" interval="0" timeout="90s"/>
            <op id="vm-demote" name="demote" interval="0" timeout="120s"/>
            <op id="vm-mon-p" name="monitor" interval="3s" role="Promoted" timeout="40s"/>
            <op id="vm-mon-u" name="monitor" interval="4s" role="Unpromoted" timeout="40s"/>
          </operations>
        </primitive>
      </clone>
    </resources>
    <constraints>
      <rsc_location id="vm-not-n3" rsc="vm-clone" node="n3" score="-INFINITY"/>
    </constraints>
  </configuration>
  <status/>
</cib>
EOF
}

# A node boots: a fresh /run and /dev/shm (as after a reboot), then
# corosync -f and pacemakerd -f.
cl_boot_node() {
	local n=$1
	in_node "$n" sh -c 'rm -rf /run/* /dev/shm/*; mkdir -p /run/colo'
	in_node "$n" setsid corosync -f </dev/null >>"$T/n$n/corosync.out" 2>&1 &
	wait_for 20 "corosync up on n$n" in_node "$n" corosync-cfgtool -s >/dev/null 2>&1 ||
		return 1
	in_node "$n" setsid pacemakerd -f </dev/null >>"$T/n$n/pacemakerd.out" 2>&1 &
	return 0
}

cl_setup() {
	local n
	CL_HUB="colo-cl-$$"
	mkdir -p "$T/ns" "$T/sbin" "$T/ocf/colo" || return 1
	mount --bind "$T/ns" "$T/ns" && mount --make-private "$T/ns" || return 1
	CL_NSMOUNT=1
	cp "$CL_SRC/tests/cluster/fence_colotest" "$T/sbin/" &&
		cp "$CL_SRC/cluster/ocf/colo" "$T/ocf/colo/colo" || return 1
	ip netns add "$CL_HUB" || return 1
	ip -n "$CL_HUB" link add br0 type bridge &&
		ip -n "$CL_HUB" link set br0 up || return 1
	echo "a shared test key of enough length" >"$T/key"
	chmod 600 "$T/key" # colo refuses a key file others may read
	cat >"$T/vm.json" <<EOF
{"name": "$CL_VM", "memory_mb": 32, "vcpus": 1, "kernel": "$GUEST", "cmdline": ""}
EOF
	for n in 1 2 3; do
		cl_mk_node "$n" || return 1
		cl_corosync_conf >"$T/n$n/etc-corosync/corosync.conf"
		cl_cib >"$T/n$n/var-lib-pacemaker/cib/cib.xml"
		chown hacluster:haclient "$T/n$n/var-lib-pacemaker/cib/cib.xml"
	done
}

cl_cleanup() {
	local n
	for n in 1 2 3; do
		[ -e "$T/ns/net-n$n" ] && kill_node "$n"
	done
	for n in 1 2 3; do
		umount "$T/ns/mnt-n$n" 2>/dev/null
		umount "$T/ns/net-n$n" 2>/dev/null
	done
	[ -n "${CL_NSMOUNT:-}" ] && umount "$T/ns" 2>/dev/null
	[ -n "${CL_HUB:-}" ] && ip netns del "$CL_HUB" 2>/dev/null
	CL_NSMOUNT=
}

# ---- observations (from outside the nodes) ----

# The node (n1/n2) whose instance is promoted, seen by node N's Pacemaker.
promoted_on() {
	in_node "${1:-3}" crm_resource -r vm-clone --locate 2>/dev/null |
		sed -n 's/.*running on: \(n[0-9]\) Promoted.*/\1/p' | head -n 1
}

# colo status of the VM on node N, one JSON key (empty: no answer).
vm_status() {
	"$COLO" status "$CL_VM" --json --state-dir "$T/n$1/run/colo" 2>/dev/null |
		python3 -c 'import json,sys
try:
    v = json.load(sys.stdin).get(sys.argv[1])
except Exception:
    sys.exit(1)
if v is None:
    sys.exit(1)
print(json.dumps(v).strip("\""))' "$2"
}

# The guest's counter in node N's copy of the RAM (the test guest's status
# page, tests/guest/guest_abi.h).
vm_counter() {
	od -An -tu4 -j $((0x200004)) -N4 "$T/n$1/run/colo/$CL_VM/ram" 2>/dev/null | tr -d ' '
}

# QEMU processes running in node N's namespace.
qemu_count() {
	local p c=0
	for p in $(node_pids "$1"); do
		case "$(cat "/proc/$p/comm" 2>/dev/null)" in
		qemu-system*) c=$((c + 1)) ;;
		esac
	done
	echo "$c"
}

is_primary_on() { [ "$(vm_status "$1" role)" = primary ] && [ "$(vm_status "$1" host_state)" != exiting ]; }
is_protected_on() { [ "$(vm_status "$1" protected)" = true ] && [ "$(vm_status "$1" link_up)" = true ]; }
synced_on() { # standby on node N has committed a checkpoint and is linked
	local lc
	lc=$(vm_status "$1" last_committed)
	[ -n "$lc" ] && [ "$lc" -ge 0 ] && [ "$(vm_status "$1" role)" = secondary ] &&
		[ "$(vm_status "$1" link_up)" = true ]
}
has_promoted() { [ -n "$(promoted_on 3)" ]; }
lc_above() { local lc; lc=$(vm_status "$1" last_committed); [ -n "$lc" ] && [ "$lc" -gt "$2" ]; }
host_state_is() { [ "$(vm_status "$1" host_state)" = "$2" ]; }
qemu_none() { [ "$(qemu_count "$1")" -eq 0 ]; }
promoted_is() { [ "$(promoted_on "${2:-3}")" = "$1" ]; }
no_promoted() { [ -z "$(promoted_on "${1:-3}")" ]; }
fence_constraint() {
	in_node 3 cibadmin -Q --xpath "//rsc_location[@id='colo-fence-$CL_VM']" >/dev/null 2>&1
}
no_fence_constraint() { ! fence_constraint; }
counter_above() { local c; c=$(vm_counter "$1"); [ -n "$c" ] && [ "$c" -gt "$2" ]; }
fenced_count() {
	local c
	c=$(grep -c " $1 killed" "$T/ns/fence.log" 2>/dev/null)
	echo "${c:-0}"
}
fenced_more() { [ "$(fenced_count "$1")" -gt "$2" ]; }
# The last fencing of node N killed processes (it was alive then).
fence_killed() { [ "$(grep " $1 killed" "$T/ns/fence.log" | tail -n 1 | awk '{ print $NF }')" -gt 0 ]; }
node_quorate() { [ "$(in_node "$1" crm_node -q 2>/dev/null)" = 1 ]; }

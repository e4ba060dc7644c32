#!/usr/bin/env bash
# tests/orchestrator/install-check.sh install|man BUILD_DIR SOURCE_DIR
#
# install (ctest orchestrator.install): `cmake --install` into a DESTDIR
#   with --prefix /usr installs exactly the files dist/CMakeLists.txt lists
#   (no more, no fewer); the installed colo runs; the bash completion loads
#   and completes commands; the systemd units pass `systemd-analyze verify`;
#   the tmpfiles snippet creates /run/colo with mode 0700.
# man (ctest orchestrator.man): colo.1 renders with `man --warnings -l`
#   without a single warning, and has a subsection for every command that
#   `colo --help` lists.
# A tool that is missing (man, systemd-analyze) makes the case print
# "SKIP: <reason>"; a failed check exits 1 with what was wrong.
set -euo pipefail
mode=$1
build=$2
src=$3
fail=0
bad() {
  echo "FAIL: $*"
  fail=1
}

case $mode in
install)
  dest=$(mktemp -d /tmp/colo-install.XXXXXX)
  trap 'rm -rf "$dest"' EXIT
  DESTDIR=$dest cmake --install "$build" --prefix /usr >"$dest.log" 2>&1 ||
    { cat "$dest.log"; rm -f "$dest.log"; exit 1; }
  rm -f "$dest.log"

  expected=(
    usr/bin/colo
    usr/share/man/man1/colo.1
    usr/share/bash-completion/completions/colo
    usr/lib/systemd/system/colo-standby@.service
    usr/lib/systemd/system/colo-receive@.service
    usr/lib/tmpfiles.d/colo.conf
    usr/libexec/colo/colo-dbus-helper
    usr/share/doc/colo/README.md
    usr/share/doc/colo/examples/colo.conf
    usr/share/doc/colo/examples/dbus-helper/colo-dbus-helper.c
  )
  for d in "$src"/docs/*.md; do
    expected+=("usr/share/doc/colo/docs/${d##*/}")
  done
  [ -f "$src/cluster/ocf/colo" ] &&
    expected+=(usr/lib/ocf/resource.d/colo/colo)
  for f in "${expected[@]}"; do
    [ -f "$dest/$f" ] || bad "not installed: /$f"
  done
  # Nothing else: the list above is the documented one.
  declare -A listed=()
  for f in "${expected[@]}"; do listed[$f]=1; done
  while IFS= read -r f; do
    f=${f#"$dest"/}
    [ -n "${listed[$f]:-}" ] || bad "installed but not listed: /$f"
  done < <(find "$dest" -type f -o -type l)
  for f in usr/bin/colo usr/libexec/colo/colo-dbus-helper; do
    [ -x "$dest/$f" ] || bad "not executable: /$f"
  done
  [ ! -f "$dest/usr/lib/ocf/resource.d/colo/colo" ] ||
    [ -x "$dest/usr/lib/ocf/resource.d/colo/colo" ] ||
    bad "the OCF agent is not executable"
  echo "installed: ${#expected[@]} files"

  # The installed binary runs and says what it was built against.
  ver=$(ASAN_OPTIONS=detect_leaks=0 "$dest/usr/bin/colo" --version) ||
    bad "the installed colo --version failed"
  grep -qE '^colo [0-9]+\.[0-9]+\.[0-9]+' <<<"$ver" || bad "version: $ver"
  grep -q '^QEMU: ' <<<"$ver" || bad "no QEMU line in --version: $ver"
  grep -q '^Xen: ' <<<"$ver" || bad "no Xen line in --version: $ver"

  # Bash completion: loads, and completes 'colo pro' to 'protect'.
  comp=$(PATH="$dest/usr/bin:$PATH" ASAN_OPTIONS=detect_leaks=0 bash -c '
    source "$1"
    COMP_WORDS=(colo pro); COMP_CWORD=1; _colo; echo "${COMPREPLY[*]}"
    COMP_WORDS=(colo protect vm h --mode ""); COMP_CWORD=5; _colo
    echo "${COMPREPLY[*]}"' _ "$dest/usr/share/bash-completion/completions/colo") ||
    bad "the bash completion does not load"
  [ "$comp" = $'protect\nremus colo' ] || bad "bash completion gave: $comp"

  # The units: systemd's own parser. ExecStart must name an existing
  # binary: check copies that point at the installed one.
  if command -v systemd-analyze >/dev/null; then
    units=$(mktemp -d /tmp/colo-units.XXXXXX)
    for u in colo-standby colo-receive; do
      sed "s|/usr/bin/colo|$dest/usr/bin/colo|" \
        "$dest/usr/lib/systemd/system/$u@.service" >"$units/$u@vm1.service"
      out=$(systemd-analyze verify --man=no "$units/$u@vm1.service" 2>&1) ||
        bad "systemd-analyze verify $u@.service: $out"
      [ -z "$out" ] || bad "systemd-analyze verify $u@.service warns: $out"
    done
    rm -rf "$units"
    echo "units: systemd-analyze verify clean"
  else
    echo "note: systemd-analyze not installed: units not verified"
  fi
  if command -v systemd-tmpfiles >/dev/null; then
    systemd-tmpfiles --root="$dest" --create \
      "$dest/usr/lib/tmpfiles.d/colo.conf" ||
      bad "systemd-tmpfiles --create failed"
    m=$(stat -c %a "$dest/run/colo" 2>/dev/null || echo none)
    [ "$m" = 700 ] || bad "tmpfiles: /run/colo mode $m, not 700"
  fi
  ;;
man)
  page=$build/dist/colo.1
  [ -f "$page" ] || { echo "FAIL: $page was not generated"; exit 1; }
  if ! command -v man >/dev/null; then
    echo "SKIP: man is not installed (package man-db)"
    exit 0
  fi
  # What lintian runs, plus groff's own warnings (-ww via --warnings).
  warn=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z \
    "$page" 2>&1 >/dev/null) || bad "man -l failed"
  [ -z "$warn" ] || bad "man -l warns: $warn"
  text=$(LC_ALL=C.UTF-8 MANWIDTH=80 MAN_KEEP_FORMATTING=0 man -l "$page" |
    col -b)
  for s in NAME SYNOPSIS DESCRIPTION "GLOBAL OPTIONS" COMMANDS "EXIT STATUS" \
    ENVIRONMENT FILES "SEE ALSO"; do
    grep -q "^$s\$" <<<"$text" || bad "no section $s"
  done
  cmds=$(ASAN_OPTIONS=detect_leaks=0 "$build/orchestrator/colo" --help |
    awk '/^Commands:/ {f = 1; next} /^$/ {f = 0} f {print $1}')
  n=0
  for c in $cmds; do
    n=$((n + 1))
    grep -qE "^   $c\$" <<<"$text" || bad "no subsection for command $c"
  done
  [ "$n" -ge 10 ] || bad "only $n commands in colo --help"
  grep -q -- "--state-dir DIR" <<<"$text" || bad "options are not rendered"
  [ "$fail" -ne 0 ] || echo "man: $n commands, no warnings"
  ;;
*)
  echo "usage: $0 install|man BUILD_DIR SOURCE_DIR" >&2
  exit 2
  ;;
esac
exit "$fail"

# shellcheck shell=bash
# tests/nested/common.sh: shell functions shared by build-images and
# nested-run (host side). Sourced, never run.

# nested_copy_with_libs ROOT FILE...: copy each FILE to ROOT at the same
# path, plus every shared library ldd reports for it (and the dynamic
# loader), so the files run inside ROOT's system. /lib, /lib64, /bin and
# /sbin in ROOT are expected to be symlinks into ROOT/usr (merged /usr),
# like Debian 12's.
nested_copy_with_libs() {
    local root=$1 f lib
    shift
    for f in "$@"; do
        mkdir -p "$root$(dirname "$f")"
        cp -L "$f" "$root$f"
        ldd "$f" 2>/dev/null | awk '
            $2 == "=>" && $3 ~ /^\// { print $3 }
            $1 ~ /^\// { print $1 }' |
        while read -r lib; do
            [ -e "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    done
}

# nested_copy_extracted ROOT XROOT PATH: copy XROOT/PATH (a binary from an
# extracted .deb) to ROOT/PATH with the libraries it needs, taken from
# XROOT first and from this system otherwise.
nested_copy_extracted() {
    local root=$1 x=$2 f=$3 lib dest
    mkdir -p "$root$(dirname "$f")"
    cp -L "$x$f" "$root$f"
    LD_LIBRARY_PATH=$x/lib/x86_64-linux-gnu:$x/usr/lib/x86_64-linux-gnu \
        ldd "$x$f" 2>/dev/null | awk '
            $2 == "=>" && $3 ~ /^\// { print $3 }
            $1 ~ /^\// { print $1 }' |
    while read -r lib; do
        dest=${lib#"$x"}
        [ -e "$root$dest" ] && continue
        mkdir -p "$root$(dirname "$dest")"
        cp -L "$lib" "$root$dest"
    done
}

# nested_libs_of FILE: the shared libraries FILE needs (absolute paths,
# loader excluded), one per line.
nested_libs_of() {
    ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
}

# nested_cache_dir: where build-images keeps its images.
nested_cache_dir() {
    echo "${COLO_NESTED_CACHE:-$HOME/.cache/colo-nested}"
}

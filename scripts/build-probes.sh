#!/usr/bin/env bash
# Build the probe guests (images/probes/*.s, GNU as) into the git-ignored
# cache/probes/<name>.elf: 64-bit ELFs loaded at 1 MiB with a PVH entry note,
# bootable by kiln-vmm and by `qemu-system-x86_64 -kernel`.
# Usage: scripts/build-probes.sh [NAME...]   (default: every probe)
# Rebuilds a probe only when its source, a file it includes (`.include
# "x"`, followed through includes of includes) or the linker script is newer
# than its ELF. Prints the path of each ELF.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/images/probes
out=${KILN_CACHE:-$root/cache}/probes
mkdir -p "$out"

# sources FILE: FILE and every file it includes, recursively (each once).
sources() {
    local file=$1 inc
    case " $seen " in *" $file "*) return ;; esac
    seen="$seen $file"
    echo "$file"
    for inc in $(sed -n 's/^[[:space:]]*\.include[[:space:]]*"\([^"]*\)".*/\1/p' "$file"); do
        [ -f "$src/$inc" ] || { echo "$file includes $inc, not in $src" >&2; exit 1; }
        sources "$src/$inc"
    done
}

if [ $# -eq 0 ]; then
    set -- $(cd "$src" && ls *.s | sed 's/\.s$//')
fi
for name in "$@"; do
    s=$src/$name.s
    elf=$out/$name.elf
    [ -f "$s" ] || { echo "no probe named $name ($s)" >&2; exit 1; }
    stale=false
    [ -e "$elf" ] && [ ! "$src/probe.ld" -nt "$elf" ] || stale=true
    seen=
    deps=$(sources "$s")
    for dep in $deps; do
        if [ "$dep" -nt "$elf" ]; then stale=true; fi
    done
    if $stale; then
        as --64 -I "$src" -o "$out/$name.o" "$s"
        ld -m elf_x86_64 -nostdlib -z noexecstack -z max-page-size=4096 --no-warn-rwx-segments \
            -T "$src/probe.ld" -o "$elf.partial" "$out/$name.o"
        rm -f "$out/$name.o"
        mv "$elf.partial" "$elf"
    fi
    echo "$elf"
done

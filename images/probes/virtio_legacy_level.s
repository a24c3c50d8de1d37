/*
 * virtio_legacy_level: the virtio_legacy probe with the device's IOAPIC
 * pin programmed as an OS programs it from Kiln's ACPI tables (the DSDT's
 * static _PRT entry and the MADT's override for the GSI: level
 * triggered, active low) instead of edge/active high. KVM's IOAPIC must
 * still deliver the resampling irqfd's assertion (it ignores the
 * polarity bit) and treat it as level (remote IRR set). Everything else
 * is virtio_legacy.s (scripts/build-probes.sh follows the include).
 */
        .set INTX_LEVEL_LOW, 1
        .include "virtio_legacy.s"

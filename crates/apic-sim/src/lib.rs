//! apic-sim library.

//! Typed APIC client.

-- How an uplink compares with the APIC's LLDP is computed on read (a host's
-- `effective_uplinks`); the stored copy was never anything but 'configured'.
ALTER TABLE host_uplinks DROP COLUMN learned;

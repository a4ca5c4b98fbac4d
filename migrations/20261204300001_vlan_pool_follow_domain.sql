-- A VLAN pool can follow a physical domain's static encap blocks (issue 11): the reconciler
-- sets its ranges from them.
ALTER TABLE vlan_pools ADD COLUMN follow_domain TEXT;

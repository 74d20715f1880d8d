/**
 * Small pools for devicemapper tests: the VM runs under software emulation with its /tmp in RAM,
 * so data and base sizes are kept small (Docker's defaults, 100G/10G, would only cost time).
 */
export const DM_TEST_OPTIONS: Record<string, string> = {
  'dm.loopdatasize': '1G',
  'dm.loopmetadatasize': '64M',
  'dm.basesize': '256M',
};

/** Store files that change with any write to the pool (loop files, device-id counter, transaction). */
export const DM_STATE_FILES = [
  'devicemapper/devicemapper',
  'devicemapper/metadata/deviceset-metadata',
  'devicemapper/metadata/transaction-metadata',
];

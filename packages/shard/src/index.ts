// Filled in by the shard work in progress; see the package README when it lands.
export {};

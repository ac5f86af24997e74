// Filled in by the worker work in progress; see the package README when it lands.
export {};

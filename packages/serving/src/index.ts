// Filled in by the serving work in progress; see the package README when it lands.
export {};

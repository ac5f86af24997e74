// Filled in by the cli work in progress; see the package README when it lands.
export {};

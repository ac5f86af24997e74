// Filled in by the model work in progress; see the package README when it lands.
export {};

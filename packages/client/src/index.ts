// Filled in by the client work in progress; see the package README when it lands.
export {};

/** The seeded PRNG lives with the simulators; tests and benchmarks use the same one. */
export { prng } from "../../agent/demo/prng";

/**
 * Deterministic, seeded fixtures in the formats the dataset readers support, so tests never
 * need the public datasets (which users download themselves; see the README's Datasets section).
 * Each generator writes files into a directory the caller owns and returns the ground truth.
 */
export {
  writeCriteoFixture,
  type CriteoFixture,
  type CriteoFixtureOptions,
  type CriteoFixtureRow,
} from './criteo.js';
export {
  writeMovieLensFixture,
  type MovieLensFixture,
  type MovieLensFixtureOptions,
  type MovieLensFixtureRating,
} from './movielens.js';
export {
  writeOpenBanditFixture,
  type OpenBanditFixture,
  type OpenBanditFixtureOptions,
  type OpenBanditFixtureRow,
} from './open-bandit.js';
export { writeCsvFixture, type CsvFixture, type CsvFixtureOptions, type CsvFixtureRow } from './csv.js';

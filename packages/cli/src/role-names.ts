/**
 * The role names alone, without the roles' option schemas (`role-schemas.ts` imports every
 * role package): what discovery and `freshet status` need, so they load fast.
 */

/** The role processes a cluster config plans. */
export type RoleName = 'shard' | 'worker' | 'serving';
export const roleNames: readonly RoleName[] = ['shard', 'worker', 'serving'];

export { freePort } from '../../src/chaos/cluster.js';

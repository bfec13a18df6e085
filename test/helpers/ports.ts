export { freePort } from '../../chaos/cluster.js';

export * from '../../src/chaos/cluster.js';

export * from '../../chaos/cluster.js';

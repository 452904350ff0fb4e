// Entry point for suites: `import { createLab } from '../lab/index.ts'`.
export * from './lab.ts';
export * from './cni.ts';
export * from './exec.ts';
export * from './fabric.ts';
export * from './kubeproxy.ts';
export * from './markroute.ts';
export * from './snapshot.ts';
export * from './gateway.ts';
export * from './main-plugins.ts';
export * from './agent.ts';

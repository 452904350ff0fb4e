// A pause image built here, since no registry is reachable: a static C program that sleeps in
// pause() until SIGTERM/SIGINT, packed as an OCI image layout tarball (oci-layout, index.json,
// sha256 blobs: one uncompressed layer, a config with the Entrypoint, a manifest) that
// `ctr images import` takes.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../lab/exec.ts';

export const PAUSE_IMAGE = 'localhost/markroute-pause:e2e';

const PAUSE_C = `#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
  signal(SIGTERM, done);
  signal(SIGINT, done);
  for (;;) pause();
}
`;

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };

/** Writes `data` as a blob of the layout; returns its descriptor fields. */
function blob(layout: string, data: Buffer): { digest: string; size: number } {
  const hex = createHash('sha256').update(data).digest('hex');
  writeFileSync(join(layout, 'blobs', 'sha256', hex), data);
  return { digest: `sha256:${hex}`, size: data.length };
}

/**
 * Builds the image under `dir` and returns the path of its OCI tarball. `name` goes into the
 * index's io.containerd.image.name annotation, which ctr uses as the image's reference.
 */
export function buildPauseImage(dir: string, name = PAUSE_IMAGE): string {
  const work = join(dir, 'pause-image');
  const rootfs = join(work, 'rootfs');
  const layout = join(work, 'layout');
  mkdirSync(rootfs, { recursive: true });
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(work, 'pause.c'), PAUSE_C);
  run(['gcc', '-static', '-Os', '-s', '-o', join(rootfs, 'pause'), join(work, 'pause.c')], { timeoutMs: 120_000 });

  const layerTar = join(work, 'layer.tar');
  run(['tar', '-C', rootfs, '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-cf', layerTar, 'pause']);
  const layer = blob(layout, readFileSync(layerTar));
  const platform = { architecture: ARCH[process.arch] ?? process.arch, os: 'linux' };
  const config = blob(layout, Buffer.from(JSON.stringify({
    ...platform,
    config: { Entrypoint: ['/pause'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
  })));
  const manifest = blob(layout, Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
  })));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      ...manifest,
      annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.split(':').at(-1) },
      platform,
    }],
  }));
  const tarball = join(work, 'pause-image.tar');
  run(['tar', '-C', layout, '--owner=0', '--group=0', '--numeric-owner', '-cf', tarball, 'oci-layout', 'index.json', 'blobs']);
  return tarball;
}

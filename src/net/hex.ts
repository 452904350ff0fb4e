/** A 32-bit mark, mask or group as the kernel tools print it: 0x10. */
export const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;

// Types of constants.mjs (see there).
type Sysctls = Readonly<Record<string, number>>;
export declare const NODE_IP: string;
export declare const FABRIC_IP: string;
export declare const UPLINK: string;
export declare const POD_CIDR: string;
export declare const PTP_SUBNET: string;
export declare const NODE_SYSCTLS4: Sysctls;
export declare const FABRIC_SYSCTLS4: Sysctls;
export declare const FABRIC_UPLINK_SYSCTLS4: Sysctls;

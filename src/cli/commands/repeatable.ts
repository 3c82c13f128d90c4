// A flag given several times collects its values (commander's argParser for repeatable flags).
export const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

#!/usr/bin/env node
// Process entry of a gradient worker; argv and env are read only here and in runWorkerProcess.
import { runWorkerProcess } from './worker-process.js';

process.exitCode = await runWorkerProcess();

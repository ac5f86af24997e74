import { Command } from 'commander';
import { modelImportCommand } from './model-import.js';
import { modelPinCommand, modelUnpinCommand } from './model-pin.js';
import { modelRollbackCommand } from './model-rollback.js';
import { modelTagCommand, modelTagsCommand, modelUntagCommand } from './model-tag.js';

/**
 * `freshet model ...`: the model as a whole. A command group: each subcommand lives in its own
 * module and is added here, one line each (docs/model-versions.md for tag, tags, untag,
 * rollback, pin, unpin; docs/warm-start.md for import).
 */
export function modelCommand(): Command {
  return new Command('model')
    .description(
      'The model as a whole: versions, rollback, pin (docs/model-versions.md); import (docs/warm-start.md)',
    )
    .addCommand(modelTagCommand())
    .addCommand(modelTagsCommand())
    .addCommand(modelUntagCommand())
    .addCommand(modelRollbackCommand())
    .addCommand(modelPinCommand())
    .addCommand(modelUnpinCommand())
    .addCommand(modelImportCommand());
}
